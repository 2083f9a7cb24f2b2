//! https remotes: the certificate authorities trusted beside the system's
//! (`ca_bundle`, handed to our TLS stream once at start), and our words for
//! a certificate that was refused: expired, for another host, or from an
//! authority nobody named.

use std::net::IpAddr;
use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509StoreContext};

/// The largest `tls_ca_pem` a mirror may hold.
pub const MAX_CA_PEM_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("ca_bundle {path}: {message}")]
    Bundle { path: String, message: String },
}

/// Adds the PEM certificates of `bundle` to the authorities trusted for
/// every https remote from now on; the system's stay trusted. How many
/// certificates the file holds.
pub fn trust_bundle(bundle: &Path) -> Result<usize, TrustError> {
    let refused = |message: String| TrustError::Bundle {
        path: bundle.display().to_string(),
        message,
    };
    let pem = std::fs::read(bundle).map_err(|e| refused(e.to_string()))?;
    let certificates = X509::stack_from_pem(&pem).map_err(|e| refused(e.to_string()))?;
    if certificates.is_empty() {
        return Err(refused("holds no PEM certificate".into()));
    }
    super::tls_stream::trust(bundle).map_err(|e| refused(e.to_string()))?;
    *TRUSTED_BUNDLE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pem);
    Ok(certificates.len())
}

/// The `ca_bundle` [`trust_bundle`] read, for connections made outside
/// libgit2 (LFS transfers).
static TRUSTED_BUNDLE: std::sync::RwLock<Option<Vec<u8>>> = std::sync::RwLock::new(None);

/// The PEM of the service's `ca_bundle`, if one is trusted.
pub fn trusted_bundle() -> Option<Vec<u8>> {
    TRUSTED_BUNDLE
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Checks a mirror's `tls_ca_pem`: PEM certificates, at least one, at most
/// [`MAX_CA_PEM_BYTES`]. How many it holds.
pub fn check_ca_pem(pem: &str) -> Result<usize, String> {
    if pem.len() > MAX_CA_PEM_BYTES {
        return Err(format!("at most {MAX_CA_PEM_BYTES} bytes"));
    }
    match X509::stack_from_pem(pem.as_bytes()) {
        Ok(certs) if !certs.is_empty() => Ok(certs.len()),
        Ok(_) => Err("holds no PEM certificate".into()),
        Err(_) => Err("not PEM certificates".into()),
    }
}

/// Whether the certificate `leaf` (DER) that `host` presented is valid now,
/// for `host`, and issued by one of the certificates of `ca_pem`. Any of them
/// may anchor the chain (an intermediate too): libgit2 hands over only the
/// leaf, so the chain cannot come from the server.
pub fn issued_by(ca_pem: &str, leaf: &[u8], host: &str) -> bool {
    verify(ca_pem, leaf, host).unwrap_or(false)
}

fn verify(ca_pem: &str, leaf: &[u8], host: &str) -> Result<bool, openssl::error::ErrorStack> {
    let leaf = X509::from_der(leaf)?;
    let mut store = X509StoreBuilder::new()?;
    for ca in X509::stack_from_pem(ca_pem.as_bytes())? {
        store.add_cert(ca)?;
    }
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
    let mut param = X509VerifyParam::new()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => param.set_ip(ip)?,
        Err(_) => param.set_host(bare)?,
    }
    store.set_param(&param)?;
    let store = store.build();
    let untrusted: Stack<X509> = Stack::new()?;
    let mut context = X509StoreContext::new()?;
    context.init(&store, &leaf, &untrusted, |c| c.verify_cert())
}

/// Why the certificate `leaf` (DER) that `host` presented was refused, as an
/// operator can act on it.
pub fn explain_refusal(leaf: &[u8], host: &str) -> String {
    let Ok(cert) = X509::from_der(leaf) else {
        return format!("the TLS certificate of {host} was refused and cannot be read");
    };
    if let Ok(now) = Asn1Time::days_from_now(0) {
        if cert.not_after() < now {
            return format!(
                "the TLS certificate of {host} expired on {}",
                cert.not_after()
            );
        }
        if cert.not_before() > now {
            return format!(
                "the TLS certificate of {host} is not valid before {}",
                cert.not_before()
            );
        }
    }
    let names = names_of(&cert);
    if !names.iter().any(|name| matches_host(name, host)) {
        return format!(
            "the TLS certificate of {host} is for {}, not {host}",
            if names.is_empty() {
                "no host name".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    let issuer = cert
        .issuer_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_else(|| "an unnamed issuer".to_string());
    format!(
        "the TLS certificate of {host} is signed by {issuer}, an authority this service \
         does not trust; add it to the ca_bundle setting (MIRRORHOST_CA_BUNDLE) or the mirror's tls_ca_pem"
    )
}

/// The DNS names and IP addresses the certificate is for.
fn names_of(cert: &X509) -> Vec<String> {
    let Some(alt) = cert.subject_alt_names() else {
        return Vec::new();
    };
    alt.iter()
        .filter_map(|name| {
            name.dnsname().map(str::to_string).or_else(|| {
                let ip = match name.ipaddress()? {
                    [a, b, c, d] => IpAddr::from([*a, *b, *c, *d]),
                    bytes => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
                };
                Some(ip.to_string())
            })
        })
        .collect()
}

/// Whether a certificate name covers `host`: equal, ignoring case, or a
/// wildcard standing for exactly the first label.
fn matches_host(name: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case(host) {
        return true;
    }
    match (name.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((first, rest))) => {
            !first.is_empty()
                && host.parse::<IpAddr>().is_err()
                && suffix.eq_ignore_ascii_case(rest)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label_only() {
        assert!(matches_host("git.example.com", "GIT.example.com"));
        assert!(matches_host("*.example.com", "git.example.com"));
        assert!(!matches_host("*.example.com", "a.git.example.com"));
        assert!(!matches_host("*.example.com", "example.com"));
        assert!(matches_host("127.0.0.1", "127.0.0.1"));
        assert!(matches_host("::1", "[::1]"));
        assert!(!matches_host("*.0.0.1", "127.0.0.1"));
    }
}
