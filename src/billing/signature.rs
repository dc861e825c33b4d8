//! Verifying Stripe's `Stripe-Signature` header: a pure function of the raw
//! body, the header, the secrets, the clock and the tolerance.
//!
//! Stripe signs `"{t}.{raw body}"` with HMAC-SHA256 keyed by the endpoint's
//! secret (the whole `whsec_…` string) and sends `t=<unix>,v1=<hex>[,v1=<hex>…]`.
//! During a secret rotation Stripe sends one `v1` per live secret, and we may
//! hold several secrets ourselves: any (signature, secret) pair that matches is
//! enough. Written here rather than taken from `stripe_webhook` because that
//! one knows a single secret and also parses the event strictly, which we do
//! separately (see `event.rs`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a webhook was refused. Never shown in detail beyond this to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Longest header we look at; a real one is well under 1 KiB.
const MAX_HEADER_LEN: usize = 4096;

/// Checks `header` against `payload` with every secret in `secrets`.
///
/// `now` and the header's `t` are unix seconds; a `t` more than `tolerance_secs`
/// away from `now` (either side) is stale, even when its signature is right, so
/// a captured webhook cannot be replayed later.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[&str],
    now: i64,
    tolerance_secs: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            // Skip what is not hex or not 32 bytes: it cannot match anyway.
            "v1" => {
                if let Ok(sig) = hex::decode(value)
                    && sig.len() == 32
                {
                    candidates.push(sig);
                }
            }
            // v0 (test-mode legacy) and future schemes are ignored, as Stripe's libraries do.
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    // Compare every pair, without stopping at the first match, so the time
    // taken does not say which secret or signature matched.
    let mut matched = false;
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        for sig in &candidates {
            // `verify_slice` compares in constant time.
            matched |= mac.clone().verify_slice(sig).is_ok();
        }
    }
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    // Checked after the signature so a forged header learns nothing about our clock.
    if (now - t).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    Ok(t)
}

/// The `v1` signature Stripe would send for `payload` at `t` (hex).
pub fn sign(payload: &[u8], secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret_0123456789abcdefghijkl";
    const OTHER: &str = "whsec_other_secret_0123456789abcdefghijk";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;
    const NOW: i64 = 1_800_000_000;

    fn header(t: i64, sigs: &[&str]) -> String {
        let mut h = format!("t={t}");
        for s in sigs {
            h.push_str(&format!(",v1={}", sign(BODY, s, t)));
        }
        h
    }

    #[test]
    fn known_vector_matches_an_independent_hmac() {
        // printf '1.{}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            sign(b"{}", "whsec_test", 1),
            "7500d5d4be4b3ef07af1fe56f7d522d135cdaa7530de557e67cc1049c52de094"
        );
    }

    #[test]
    fn accepts_a_good_signature() {
        let h = header(NOW, &[SECRET]);
        assert_eq!(verify(BODY, Some(&h), &[SECRET], NOW, 300), Ok(NOW));
    }

    #[test]
    fn accepts_any_of_several_signatures_and_secrets() {
        // Stripe rolling its secret: two v1 values, we hold only the new one.
        let h = header(NOW, &[OTHER, SECRET]);
        assert!(verify(BODY, Some(&h), &[SECRET], NOW, 300).is_ok());
        // We rolling ours: one v1, we hold old and new.
        let h = header(NOW, &[OTHER]);
        assert!(verify(BODY, Some(&h), &[SECRET, OTHER], NOW, 300).is_ok());
    }

    #[test]
    fn refuses_wrong_secret_and_tampered_body() {
        let h = header(NOW, &[OTHER]);
        assert_eq!(
            verify(BODY, Some(&h), &[SECRET], NOW, 300),
            Err(SignatureError::Mismatch)
        );
        let h = header(NOW, &[SECRET]);
        assert_eq!(
            verify(b"{\"id\":\"evt_2\"}", Some(&h), &[SECRET], NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refuses_stale_and_future_timestamps() {
        let h = header(NOW - 301, &[SECRET]);
        assert_eq!(
            verify(BODY, Some(&h), &[SECRET], NOW, 300),
            Err(SignatureError::Stale)
        );
        let h = header(NOW + 301, &[SECRET]);
        assert_eq!(
            verify(BODY, Some(&h), &[SECRET], NOW, 300),
            Err(SignatureError::Stale)
        );
        let h = header(NOW - 300, &[SECRET]);
        assert!(verify(BODY, Some(&h), &[SECRET], NOW, 300).is_ok());
    }

    #[test]
    fn refuses_malformed_headers() {
        for bad in [
            "",
            "garbage",
            "v1=abcd",
            "t=notanumber,v1=00",
            "t=1,t=2,v1=00",
            &format!("t={NOW}"),
            &format!("t={NOW},v1=zz"),
            &format!("t={NOW},v1={}", "a".repeat(MAX_HEADER_LEN)),
        ] {
            let r = verify(BODY, Some(bad), &[SECRET], NOW, 300);
            assert!(
                matches!(r, Err(SignatureError::Malformed | SignatureError::Mismatch)),
                "{bad:?} gave {r:?}"
            );
        }
        assert_eq!(
            verify(BODY, None, &[SECRET], NOW, 300),
            Err(SignatureError::Missing)
        );
        // A signature with the timestamp changed no longer matches.
        let good = header(NOW, &[SECRET]);
        let moved = good.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(
            verify(BODY, Some(&moved), &[SECRET], NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn no_secrets_means_nothing_verifies() {
        let h = header(NOW, &[SECRET]);
        assert_eq!(
            verify(BODY, Some(&h), &[], NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }
}
