use std::path::PathBuf;

/// The contract lives at the repository's root (`proto/`), where buf and the
/// SDK generators read it too.
const ROOT: &str = "../../proto";

const PROTOS: &[&str] = &[
    "usermgmt/v1/resources.proto",
    "usermgmt/v1/auth_service.proto",
    "usermgmt/v1/user_service.proto",
    "usermgmt/v1/role_service.proto",
    "usermgmt/v1/organisation_service.proto",
    "usermgmt/v1/audit_service.proto",
    "usermgmt/v1/playback_service.proto",
    "usermgmt/v1/session_service.proto",
    "usermgmt/v1/api_token_service.proto",
    "usermgmt/v1/change_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let root = PathBuf::from(ROOT);
    let protos: Vec<PathBuf> = PROTOS.iter().map(|proto| root.join(proto)).collect();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("usermgmt_descriptor.bin"))
        .compile_protos(&protos, &[root, well_known])?;
    println!("cargo:rerun-if-changed={ROOT}");
    Ok(())
}
