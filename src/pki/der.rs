//! Just enough DER to give a certificate a subject with several O attributes.
//!
//! Kubernetes maps every O value of a client certificate to a group, so a user in two groups
//! needs two O attributes. rcgen 0.14 keeps one value per attribute type
//! (rustls/rcgen#81), so we let rcgen build and sign the certificate, then swap in a subject
//! we encode ourselves and sign the changed TBSCertificate again with the same key.

use anyhow::{Context, Result, bail, ensure};
use rcgen::SigningKey;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_BIT_STRING: u8 = 0x03;
/// `[0] EXPLICIT Version`: present in every v3 certificate, and it shifts the field indices.
const TAG_VERSION: u8 = 0xa0;

/// id-at-commonName (2.5.4.3), already in DER content form.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// id-at-organizationName (2.5.4.10).
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// Position of `subject` in a v3 TBSCertificate: version, serialNumber, signature, issuer,
/// validity, subject.
const SUBJECT_INDEX: usize = 5;

/// One parsed TLV: its tag, the whole encoding (header included) and the content alone.
struct Element<'a> {
    tag: u8,
    whole: &'a [u8],
    content: &'a [u8],
}

/// Reads one element from the front of `input`; returns it and the bytes after it.
fn read_element(input: &[u8]) -> Result<(Element<'_>, &[u8])> {
    let (&tag, after_tag) = input
        .split_first()
        .context("DER element is truncated: no tag")?;
    // Certificates only use low tag numbers; refusing the multi-byte form keeps this simple.
    ensure!(
        tag & 0x1f != 0x1f,
        "DER tag {tag:#04x} uses the unsupported high-tag-number form"
    );
    let (&first, after_first) = after_tag
        .split_first()
        .context("DER element is truncated: no length")?;
    let (length, after_length) = if first < 0x80 {
        (usize::from(first), after_first)
    } else {
        let count = usize::from(first & 0x7f);
        ensure!(
            (1..=4).contains(&count),
            "DER length uses {count} bytes; only 1 to 4 are supported"
        );
        ensure!(after_first.len() >= count, "DER length is truncated");
        let (bytes, rest) = after_first.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, rest)
    };
    ensure!(
        after_length.len() >= length,
        "DER element claims {length} bytes but only {} remain",
        after_length.len()
    );
    let header_len = input.len() - after_length.len();
    let (whole, rest) = input.split_at(header_len + length);
    Ok((
        Element {
            tag,
            whole,
            content: &whole[header_len..],
        },
        rest,
    ))
}

fn read_all(mut input: &[u8]) -> Result<Vec<Element<'_>>> {
    let mut elements = Vec::new();
    while !input.is_empty() {
        let (element, rest) = read_element(input)?;
        elements.push(element);
        input = rest;
    }
    Ok(elements)
}

fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        // Lossless: checked just above.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
    let mut type_and_value = encode(TAG_OID, oid);
    type_and_value.extend(encode(TAG_UTF8_STRING, value.as_bytes()));
    encode(TAG_SET, &encode(TAG_SEQUENCE, &type_and_value))
}

/// Encodes `O=<org>, …, CN=<common_name>`: the order Go's crypto/x509 writes, so the subject
/// looks the same as one made by kubeadm.
pub(super) fn subject_name(common_name: &str, organizations: &[&str]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for org in organizations {
        rdns.extend(attribute(OID_ORGANIZATION, org));
    }
    rdns.extend(attribute(OID_COMMON_NAME, common_name));
    encode(TAG_SEQUENCE, &rdns)
}

/// Returns `cert_der` with its subject replaced by `subject` (a DER Name), signed again by
/// `issuer_key`, which must be the key that signed `cert_der`: the signature algorithm
/// identifier is carried over unchanged.
pub(super) fn replace_subject(
    cert_der: &[u8],
    subject: &[u8],
    issuer_key: &impl SigningKey,
) -> Result<Vec<u8>> {
    let (certificate, trailing) = read_element(cert_der)?;
    ensure!(
        certificate.tag == TAG_SEQUENCE && trailing.is_empty(),
        "not a single DER certificate"
    );
    let parts = read_all(certificate.content)?;
    let [tbs, signature_algorithm, _old_signature] = parts.as_slice() else {
        bail!(
            "certificate has {} top-level fields, expected 3",
            parts.len()
        );
    };
    ensure!(tbs.tag == TAG_SEQUENCE, "TBSCertificate is not a SEQUENCE");

    let fields = read_all(tbs.content)?;
    ensure!(
        fields.first().map(|f| f.tag) == Some(TAG_VERSION),
        "certificate is not X.509 v3 (no version field)"
    );
    match fields.get(SUBJECT_INDEX) {
        Some(field) if field.tag == TAG_SEQUENCE => {}
        _ => bail!("TBSCertificate has no subject Name at field {SUBJECT_INDEX}"),
    }
    let mut tbs_content = Vec::with_capacity(tbs.content.len() + subject.len());
    for (index, field) in fields.iter().enumerate() {
        let bytes = if index == SUBJECT_INDEX {
            subject
        } else {
            field.whole
        };
        tbs_content.extend_from_slice(bytes);
    }
    let new_tbs = encode(TAG_SEQUENCE, &tbs_content);

    let signature = issuer_key
        .sign(&new_tbs)
        .context("signing the certificate with the CA key failed")?;
    // A BIT STRING's content starts with the count of unused bits in the last byte: none here.
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0);
    bits.extend(signature);

    let mut body = new_tbs;
    body.extend_from_slice(signature_algorithm.whole);
    body.extend(encode(TAG_BIT_STRING, &bits));
    Ok(encode(TAG_SEQUENCE, &body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, X509Name};

    #[test]
    fn lengths_round_trip_in_short_and_long_form() -> Result<()> {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![0xab; len];
            let encoded = encode(TAG_SEQUENCE, &content);
            let (element, rest) = read_element(&encoded)?;
            assert!(rest.is_empty());
            assert_eq!(element.tag, TAG_SEQUENCE);
            assert_eq!(element.content.len(), len);
        }
        Ok(())
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let encoded = encode(TAG_SEQUENCE, &[1, 2, 3, 4]);
        for cut in 0..encoded.len() {
            assert!(read_element(&encoded[..cut]).is_err(), "cut at {cut}");
        }
        assert!(read_element(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(read_element(&[0x1f, 0x00]).is_err());
    }

    #[test]
    fn subject_parses_back_with_every_organization() -> Result<()> {
        let der = subject_name("alice", &["dev", "ops", "system:masters"]);
        let (_, name) = X509Name::from_der(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
        let orgs: Vec<&str> = name
            .iter_organization()
            .map(|a| a.as_str())
            .collect::<Result<_, _>>()?;
        assert_eq!(orgs, ["dev", "ops", "system:masters"]);
        let cn: Vec<&str> = name
            .iter_common_name()
            .map(|a| a.as_str())
            .collect::<Result<_, _>>()?;
        assert_eq!(cn, ["alice"]);
        Ok(())
    }
}
