//! Authentication: SigV4 verification of every API request (and of `AWS_IAM` function URL
//! requests), and who the caller is.
//!
//! A request is signed in its `Authorization` header or, presigned, in its query string. The
//! server parses the credential scope, looks the access key up (`store::accounts`), rebuilds
//! the canonical request from the signed headers and the body as received (so a changed body
//! or header fails), signs it again with `aws-sigv4` and compares in constant time. The
//! signature's time must be within 15 minutes of the server's clock (a presigned URL: within
//! its `X-Amz-Expires`), as AWS enforces.
//!
//! Modes: [`AuthMode::Enforced`] refuses anything not signed by a known, active key.
//! [`AuthMode::Development`] (only allowed on loopback) still verifies every request signed
//! with a known key, but lets unsigned requests and unknown keys act as the default account,
//! so `aws --endpoint-url … ` with dummy credentials keeps working on a laptop.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, Method, Uri};
use model::LambdaError;
use model::error::ErrorCode;
use store::accounts::{Accounts, constant_time_eq};

/// How far a signature's time may be from the server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The longest a presigned request may be valid (SigV4's limit: 7 days).
const MAX_PRESIGN: u64 = 7 * 24 * 3600;
/// How long a looked-up key is trusted before it is read again (revocations take this long).
const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request must be signed by a known, active access key.
    Enforced,
    /// Known keys are verified; unsigned requests and unknown keys act as the default account.
    Development,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    /// The access key that signed it (`None`: unsigned, development mode).
    pub access_key_id: Option<String>,
}

impl Caller {
    /// The caller's principal ARN, as AWS's error messages name it.
    pub fn arn(&self) -> String {
        match &self.access_key_id {
            Some(k) => format!("arn:aws:iam::{}:user/{k}", self.account),
            None => format!("arn:aws:iam::{}:root", self.account),
        }
    }
}

/// An access key's account and secret.
type KeyEntry = (String, String);

/// Verifies requests against the accounts database.
pub struct Authenticator {
    accounts: Accounts,
    mode: AuthMode,
    default_account: String,
    region: String,
    cache: Mutex<HashMap<String, (Option<KeyEntry>, Instant)>>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> LambdaError {
    LambdaError::new(code, message)
}

fn mismatch() -> LambdaError {
    err(
        ErrorCode::InvalidSignature,
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
    )
}

/// The parts of a SigV4 signature, wherever it came from.
#[derive(Debug, PartialEq, Eq)]
struct Signed {
    access_key_id: String,
    scope_date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    /// `X-Amz-Expires` of a presigned request.
    expires: Option<u64>,
}

fn parse_credential(c: &str) -> Option<(String, String, String, String)> {
    let mut parts = c.split('/');
    let (akid, date, region, service, term) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (term == "aws4_request" && parts.next().is_none() && !akid.is_empty())
        .then(|| (akid.to_string(), date.to_string(), region.to_string(), service.to_string()))
}

fn incomplete(what: &str) -> LambdaError {
    err(ErrorCode::InvalidSignature, format!("Authorization header requires '{what}' parameter."))
}

/// Parses `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
fn parse_header(value: &str, headers: &HeaderMap) -> Result<Signed, LambdaError> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256").ok_or_else(|| {
        err(ErrorCode::InvalidSignature, "Unsupported signature algorithm: only AWS4-HMAC-SHA256 is accepted.")
    })?;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            fields.insert(k.trim(), v.trim());
        }
    }
    let credential = fields.get("Credential").ok_or_else(|| incomplete("Credential"))?;
    let signed_headers = fields.get("SignedHeaders").ok_or_else(|| incomplete("SignedHeaders"))?;
    let signature = fields.get("Signature").ok_or_else(|| incomplete("Signature"))?;
    let (access_key_id, scope_date, region, service) = parse_credential(credential).ok_or_else(|| {
        err(
            ErrorCode::InvalidSignature,
            "Credential should be of the form <key>/<date>/<region>/<service>/aws4_request.",
        )
    })?;
    // Checked once the key is known (development mode lets unknown keys through unchecked).
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Ok(Signed {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers: signed_headers.split(';').map(str::to_ascii_lowercase).collect(),
        signature: signature.to_string(),
        amz_date,
        expires: None,
    })
}

const PRESIGN_PARAMS: [&str; 6] =
    ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"];

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// Parses a presigned query string; `None` if it is not one.
fn parse_query(query: &str) -> Option<Result<Signed, LambdaError>> {
    let params: HashMap<String, String> =
        query.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect();
    let signature = params.get("X-Amz-Signature")?;
    let get = |k: &str| params.get(k).ok_or_else(|| err(ErrorCode::InvalidSignature, format!("{k} is missing.")));
    Some((|| {
        if get("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
            return Err(err(ErrorCode::InvalidSignature, "Unsupported X-Amz-Algorithm: only AWS4-HMAC-SHA256."));
        }
        let (access_key_id, scope_date, region, service) = parse_credential(get("X-Amz-Credential")?)
            .ok_or_else(|| err(ErrorCode::InvalidSignature, "X-Amz-Credential is malformed."))?;
        let expires = get("X-Amz-Expires")?.parse::<u64>().ok().filter(|e| *e <= MAX_PRESIGN).ok_or_else(|| {
            err(ErrorCode::InvalidSignature, "X-Amz-Expires must be a number of seconds up to 604800.")
        })?;
        Ok(Signed {
            access_key_id,
            scope_date,
            region,
            service,
            signed_headers: get("X-Amz-SignedHeaders")?.split(';').map(str::to_ascii_lowercase).collect(),
            signature: signature.clone(),
            amz_date: get("X-Amz-Date")?.clone(),
            expires: Some(expires),
        })
    })())
}

fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(s, format).ok()?.assume_utc();
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dt = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    dt.format(format).unwrap_or_default()
}

/// Checks the signature's time against the clock (and a presigned request's expiry).
fn check_time(signed: &Signed, t: SystemTime, now: SystemTime) -> Result<(), LambdaError> {
    let (earliest, latest) = match signed.expires {
        Some(expires) => {
            (now.checked_sub(Duration::from_secs(expires)).unwrap_or(SystemTime::UNIX_EPOCH), now + MAX_SKEW)
        }
        None => (now.checked_sub(MAX_SKEW).unwrap_or(SystemTime::UNIX_EPOCH), now + MAX_SKEW),
    };
    if t < earliest {
        let how = match signed.expires {
            Some(e) => format!("{} - {e} sec.", amz_date(now)),
            None => format!("{} - 15 min.", amz_date(now)),
        };
        return Err(err(
            ErrorCode::InvalidSignature,
            format!("Signature expired: {} is now earlier than {} ({how})", signed.amz_date, amz_date(earliest)),
        ));
    }
    if t > latest {
        return Err(err(
            ErrorCode::InvalidSignature,
            format!(
                "Signature not yet current: {} is still later than {} ({} + 15 min.)",
                signed.amz_date,
                amz_date(latest),
                amz_date(now)
            ),
        ));
    }
    Ok(())
}

/// The URI without the presigning parameters (the signer adds them back itself).
fn strip_presign(uri: &Uri) -> String {
    let path = uri.path();
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let key = decode(p.split('=').next().unwrap_or(""));
            !PRESIGN_PARAMS.iter().any(|k| k.eq_ignore_ascii_case(&key))
        })
        .collect();
    if kept.is_empty() { path.to_string() } else { format!("{path}?{}", kept.join("&")) }
}

/// Signs the request again with `secret` and returns the signature.
#[allow(clippy::too_many_arguments)]
fn expected_signature(
    signed: &Signed,
    secret: &str,
    t: SystemTime,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    unsigned_payload: bool,
) -> Result<String, LambdaError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
    let mut chosen: Vec<(&str, String)> = Vec::new();
    for name in &signed.signed_headers {
        if signed.expires.is_none() && name == "x-amz-date" {
            continue; // the signer adds it from the time
        }
        let values: Vec<&str> = headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
        if values.is_empty() {
            return Err(mismatch());
        }
        chosen.push((name.as_str(), values.join(",")));
    }
    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(Vec::new());
    let (uri_text, body) = match signed.expires {
        Some(expires) => {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(Duration::from_secs(expires));
            // S3-style presigning signs `UNSIGNED-PAYLOAD`; botocore's generic presigner over
            // plain HTTP signs the body's hash.
            let body = if unsigned_payload { SignableBody::UnsignedPayload } else { SignableBody::Bytes(body) };
            (strip_presign(uri), body)
        }
        None => (
            uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
            SignableBody::Bytes(body),
        ),
    };
    let identity = aws_credential_types::Credentials::new(&signed.access_key_id, secret, None, None, "stratus").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&signed.region)
        .name(&signed.service)
        .time(t)
        .settings(settings)
        .build()
        .map_err(|_| mismatch())?
        .into();
    let request = SignableRequest::new(method.as_str(), uri_text, chosen.iter().map(|(k, v)| (*k, v.as_str())), body)
        .map_err(|_| mismatch())?;
    Ok(sign(request, &params).map_err(|_| mismatch())?.signature().to_string())
}

impl Authenticator {
    pub fn new(accounts: Accounts, mode: AuthMode, default_account: String, region: String) -> Self {
        Self { accounts, mode, default_account, region, cache: Mutex::new(HashMap::new()) }
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    fn anonymous(&self) -> Caller {
        Caller { account: self.default_account.clone(), access_key_id: None }
    }

    /// The account and secret of an access key (cached for a second); `None` when unknown
    /// or revoked. The object API checks its own signatures (`s3s`) with these.
    pub async fn key(&self, access_key_id: &str) -> Result<Option<KeyEntry>, LambdaError> {
        if let Some((found, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(access_key_id)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(found.clone());
        }
        let accounts = self.accounts.clone();
        let id = access_key_id.to_string();
        let found = tokio::task::spawn_blocking(move || accounts.lookup(&id))
            .await
            .map_err(|_| LambdaError::service("the key lookup failed"))?
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read access keys");
                LambdaError::service("cannot read access keys")
            })?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear(); // unknown keys must not grow it without bound
        }
        cache.insert(access_key_id.to_string(), (found.clone(), Instant::now()));
        Ok(found)
    }

    /// Who sent this request, or why it is refused.
    pub async fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Caller, LambdaError> {
        let signed = match headers.get("authorization") {
            Some(v) => parse_header(v.to_str().map_err(|_| mismatch())?, headers)?,
            None => match uri.query().and_then(parse_query) {
                Some(parsed) => parsed?,
                None if self.mode == AuthMode::Development => return Ok(self.anonymous()),
                None => return Err(err(ErrorCode::MissingAuthenticationToken, "Missing Authentication Token")),
            },
        };
        let Some((account, secret)) = self.key(&signed.access_key_id).await? else {
            if self.mode == AuthMode::Development {
                return Ok(self.anonymous());
            }
            return Err(err(ErrorCode::UnrecognizedClient, "The security token included in the request is invalid."));
        };
        if signed.amz_date.is_empty() {
            return Err(err(
                ErrorCode::InvalidSignature,
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            ));
        }
        let t = parse_amz_date(&signed.amz_date).ok_or_else(|| {
            err(
                ErrorCode::InvalidSignature,
                format!(
                    "X-Amz-Date must be in the ISO 8601 basic format yyyyMMdd'T'HHmmss'Z', got '{}'.",
                    signed.amz_date
                ),
            )
        })?;
        check_time(&signed, t, SystemTime::now())?;
        if !signed.amz_date.starts_with(&signed.scope_date) {
            return Err(err(
                ErrorCode::InvalidSignature,
                format!(
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
                    signed.scope_date,
                    &signed.amz_date[..signed.amz_date.len().min(8)],
                    signed.amz_date
                ),
            ));
        }
        // The API listener serves Lambda's API and EventBridge Scheduler's.
        if signed.service != "lambda" && signed.service != "scheduler" {
            return Err(err(ErrorCode::InvalidSignature, "Credential should be scoped to correct service: 'lambda'."));
        }
        if signed.region != self.region {
            return Err(err(ErrorCode::InvalidSignature, "Credential should be scoped to a valid region."));
        }
        if !signed.signed_headers.iter().any(|h| h == "host") {
            return Err(err(ErrorCode::InvalidSignature, "'Host' must be a 'SignedHeader' in the AWS Authorization."));
        }
        let expected = expected_signature(&signed, &secret, t, method, uri, headers, body, false)?;
        let matches = constant_time_eq(&expected, &signed.signature)
            || (signed.expires.is_some()
                && constant_time_eq(
                    &expected_signature(&signed, &secret, t, method, uri, headers, body, true)?,
                    &signed.signature,
                ));
        if !matches {
            return Err(mismatch());
        }
        Ok(Caller { account, access_key_id: Some(signed.access_key_id) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_parse() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-date", "20261201T101500Z".parse().unwrap());
        let s = parse_header(
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261201/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=abcd",
            &h,
        )
        .unwrap();
        assert_eq!(s.access_key_id, "AKIAEXAMPLE");
        assert_eq!((s.scope_date.as_str(), s.region.as_str(), s.service.as_str()), ("20261201", "us-east-1", "lambda"));
        assert_eq!(s.signed_headers, ["host", "x-amz-date"]);
        assert_eq!(s.signature, "abcd");
        assert!(
            parse_header("AWS4-HMAC-SHA256 Credential=AKIA/2026/us-east-1/lambda, SignedHeaders=host, Signature=a", &h)
                .is_err()
        );
        assert!(parse_header("Basic Zm9v", &h).is_err());
        assert!(parse_header("AWS4-HMAC-SHA256 Credential=A/1/r/s/aws4_request, Signature=a", &h).is_err());
    }

    #[test]
    fn clock_skew_is_limited_to_15_minutes() {
        let now = parse_amz_date("20261201T120000Z").unwrap();
        let signed = |d: &str, expires| Signed {
            access_key_id: "A".into(),
            scope_date: d[..8].into(),
            region: "us-east-1".into(),
            service: "lambda".into(),
            signed_headers: vec!["host".into()],
            signature: String::new(),
            amz_date: d.into(),
            expires,
        };
        let ok = |d: &str, e| check_time(&signed(d, e), parse_amz_date(d).unwrap(), now);
        assert!(ok("20261201T114600Z", None).is_ok());
        let e = ok("20261201T114400Z", None).unwrap_err();
        assert_eq!(
            e.message,
            "Signature expired: 20261201T114400Z is now earlier than 20261201T114500Z (20261201T120000Z - 15 min.)"
        );
        assert!(ok("20261201T121600Z", None).unwrap_err().message.starts_with("Signature not yet current"));
        assert!(ok("20261201T110100Z", Some(3600)).is_ok());
        assert!(ok("20261201T105900Z", Some(3600)).is_err());
    }

    #[test]
    fn presigning_parameters_are_stripped_and_parsed() {
        let uri: Uri =
            "/2015-03-31/functions?MaxItems=5&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ff".parse().unwrap();
        assert_eq!(strip_presign(&uri), "/2015-03-31/functions?MaxItems=5");
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261201%2Fus-east-1%2Flambda%2Faws4_request&X-Amz-Date=20261201T120000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=ff";
        let s = parse_query(q).unwrap().unwrap();
        assert_eq!((s.access_key_id.as_str(), s.expires), ("AKIA", Some(60)));
        assert!(parse_query("MaxItems=5").is_none());
        assert!(parse_query(&q.replace("Expires=60", "Expires=9999999")).unwrap().is_err());
    }
}
