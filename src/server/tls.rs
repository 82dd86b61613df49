//! Server TLS (rustls) and optional client-certificate authentication
//! (mTLS), from PEM files named by the settings.

use std::path::Path;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::ServeArgs;

/// The TLS settings of `args`: `None` for plaintext. The error names the
/// file that could not be read (never its contents).
pub(crate) fn server_tls_config(args: &ServeArgs) -> Result<Option<ServerTlsConfig>, String> {
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (None, None) => {
            if args.tls_client_ca.is_some() {
                return Err("--tls-client-ca needs --tls-cert and --tls-key".into());
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let identity = Identity::from_pem(read(cert, "certificate")?, read(key, "private key")?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &args.tls_client_ca {
        // Clients must present a certificate signed by this CA.
        config = config
            .client_ca_root(Certificate::from_pem(read(ca, "client CA")?))
            .client_auth_optional(false);
    }
    Ok(Some(config))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))?;
    if bytes.is_empty() {
        return Err(format!("the TLS {what} {} is empty", path.display()));
    }
    Ok(bytes)
}
