//! [`Fingerprint`]: the SHA-256 digest of a DER end-entity certificate.
//!
//! It is the identity clients pin. Its text form is OpenSSH's, `SHA256:` followed by unpadded
//! standard base64, so users can compare it with `xferd fingerprint` at a glance. This module
//! only hashes and formats; it does not decide whether a fingerprint is trusted.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use crate::CertError;

const PREFIX: &str = "SHA256:";

/// SHA-256 of a DER-encoded end-entity certificate.
///
/// Displays (and `Debug`-prints) as `SHA256:<43 base64 chars>`; parses from the same form,
/// with or without `=` padding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Hashes a DER-encoded certificate.
    pub fn of_der(cert_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// The raw 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Upper-case hex bytes joined by `:` (`3F:2A:…`), as browsers, certificate managers
    /// and `openssl x509 -noout -fingerprint -sha256` show a certificate's SHA-256.
    pub fn to_colon_hex(&self) -> String {
        let hex: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        hex.join(":")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = CertError;

    /// Parses `SHA256:<base64>`; surrounding whitespace and trailing `=` padding are allowed.
    ///
    /// # Errors
    ///
    /// [`CertError::BadFingerprint`] if the prefix is missing, the base64 is invalid or
    /// non-canonical, or it does not decode to exactly 32 bytes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CertError::BadFingerprint(s.to_owned());
        let b64 = s.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
        // 32 bytes encode to 43 chars plus one `=`; accept only that much padding.
        let b64 = b64.strip_suffix('=').unwrap_or(b64);
        let decoded = STANDARD_NO_PAD.decode(b64).map_err(|_| bad())?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_hex_is_what_certificate_viewers_show() {
        let fp = Fingerprint([0xab; 32]);
        let hex = fp.to_colon_hex();
        assert_eq!(hex.len(), 32 * 3 - 1);
        assert!(hex.starts_with("AB:AB:") && hex.ends_with(":AB"), "{hex}");
    }

    #[test]
    fn display_parse_round_trip() {
        let fp = Fingerprint::of_der(b"not really a certificate");
        let text = fp.to_string();
        assert!(text.starts_with("SHA256:"));
        assert_eq!(text.len(), 7 + 43);
        assert_eq!(format!("{fp:?}"), text);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(format!("  {text}=\n").parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn known_digest() {
        // SHA-256 of the empty string, as OpenSSH would print it.
        let fp = Fingerprint::of_der(b"");
        assert_eq!(
            fp.to_string(),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(fp.as_bytes()[0], 0xe3);
    }

    #[test]
    fn rejects_bad_strings() {
        let good = Fingerprint::of_der(b"x").to_string();
        let b64 = good.strip_prefix("SHA256:").unwrap();
        for bad in [
            String::new(),
            "SHA256:".to_owned(),
            b64.to_owned(),
            format!("MD5:{b64}"),
            format!("sha1:{b64}"),
            format!("SHA256:{}", &b64[..42]),
            format!("SHA256:{b64}A"),
            format!("SHA256:{b64}=="),
            format!("SHA256:{}!", &b64[..42]),
        ] {
            match bad.parse::<Fingerprint>() {
                Err(CertError::BadFingerprint(input)) => assert_eq!(input, bad),
                other => panic!("{bad:?} parsed as {other:?}"),
            }
        }
        let msg = "nope".parse::<Fingerprint>().unwrap_err().to_string();
        assert!(msg.contains("expected SHA256:<43 base64 chars>"), "{msg}");
    }
}
