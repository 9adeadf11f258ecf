//! The lab's credentials, made at `lab up` in `<lab>/pki/` (private keys and tokens 0600): a CA,
//! the API server's serving certificate signed by it (SANs: the fabric address, 127.0.0.1, the
//! `kubernetes` Service ClusterIP, `kubernetes`, `kubernetes.default`, `kubernetes.default.svc`,
//! `kubernetes.default.svc.cluster.local`, `localhost` — every name a client on the machine, a
//! node or a pod reaches the API by), the ServiceAccount token signing key (ECDSA P-256) and the
//! admin bearer token. The control plane and every client of the lab read them from here.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::spec::LabSpec;
use crate::LabError;

/// The admin user the admin token stands for.
pub const ADMIN_USER: &str = "sarasa-admin";
/// The ServiceAccount whose token the lab's agents use (namespace, name).
pub const AGENT_SERVICE_ACCOUNT: (&str, &str) = ("sarasa-system", "sarasa-agent");

/// Where a lab's credentials live.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: impl Into<PathBuf>) -> Pki {
        Pki { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.join("admin.token")
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> Result<String, LabError> {
        let p = self.ca_cert();
        fs::read_to_string(&p).map_err(|e| LabError::io(&p, e))
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> Result<String, LabError> {
        let p = self.admin_token_file();
        fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .map_err(|e| LabError::io(&p, e))
    }

    /// Makes every credential of the lab (replacing any earlier ones).
    pub fn generate(&self, spec: &LabSpec) -> Result<(), LabError> {
        fs::create_dir_all(&self.dir).map_err(|e| LabError::io(&self.dir, e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| LabError::io(&self.dir, e))?;
        let err =
            |what: &str, e: rcgen::Error| LabError::Invalid(format!("making the {what}: {e}"));
        let ca_key = rcgen::KeyPair::generate().map_err(|e| err("CA key", e))?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA", e))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("sarasa-{}-ca", spec.name),
        );
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).map_err(|e| err("CA", e))?;

        let key = rcgen::KeyPair::generate().map_err(|e| err("server key", e))?;
        let mut params = rcgen::CertificateParams::new(server_sans(spec))
            .map_err(|e| err("server certificate", e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .map_err(|e| err("server certificate", e))?;
        let sa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| err("service account key", e))?;

        write_private(&self.ca_cert(), ca.pem().as_bytes(), 0o644)?;
        write_private(&self.ca_key(), ca_key.serialize_pem().as_bytes(), 0o600)?;
        write_private(&self.server_cert(), cert.pem().as_bytes(), 0o644)?;
        write_private(&self.server_key(), key.serialize_pem().as_bytes(), 0o600)?;
        write_private(
            &self.service_account_key(),
            sa.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_private(&self.admin_token_file(), random_token().as_bytes(), 0o600)
    }
}

/// Every name and address the serving certificate is valid for.
pub fn server_sans(spec: &LabSpec) -> Vec<String> {
    vec![
        spec.fabric_ip.to_string(),
        "127.0.0.1".into(),
        crate::container_env::kubernetes_service_ip(spec).to_string(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", crate::CLUSTER_DOMAIN),
        "localhost".into(),
    ]
}

/// 32 random bytes, base64url: a bearer token.
pub fn random_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .unwrap_or_else(|_| b.iter_mut().for_each(|x| *x = rand_byte()));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn rand_byte() -> u8 {
    // Only reached if the system RNG fails, which ring treats as unreachable on Linux.
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        & 0xff) as u8
}

/// Writes a file atomically with `mode` (created with it, so never readable by others first).
pub fn write_private(path: &Path, data: &[u8], mode: u32) -> Result<(), LabError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| LabError::io(&tmp, e))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io(&tmp, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| LabError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| LabError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Backend, CniMode};

    #[test]
    fn credentials_are_private_and_the_certificate_names_every_way_in() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LabSpec::new("t", 2, Backend::Vxlan, CniMode::Routed).unwrap();
        let pki = Pki::new(dir.path().join("pki"));
        pki.generate(&spec).unwrap();
        let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(pki.dir.clone()), 0o700);
        for p in [
            pki.ca_key(),
            pki.server_key(),
            pki.service_account_key(),
            pki.admin_token_file(),
        ] {
            assert_eq!(mode(p.clone()), 0o600, "{}", p.display());
        }
        assert_eq!(
            server_sans(&spec),
            [
                "192.168.33.1",
                "127.0.0.1",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost"
            ]
        );
        assert!(pki
            .ca_pem()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        let token = pki.admin_token().unwrap();
        assert_eq!(token.len(), 43);
        // A second lab up makes new credentials.
        pki.generate(&spec).unwrap();
        assert_ne!(pki.admin_token().unwrap(), token);
    }
}
