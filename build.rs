use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/usermgmt/v1/resources.proto",
    "proto/usermgmt/v1/auth_service.proto",
    "proto/usermgmt/v1/user_service.proto",
    "proto/usermgmt/v1/role_service.proto",
    "proto/usermgmt/v1/organisation_service.proto",
    "proto/usermgmt/v1/audit_service.proto",
    "proto/usermgmt/v1/playback_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("usermgmt_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from("proto"), well_known])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
