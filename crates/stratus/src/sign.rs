//! Signs the CLI's requests with SigV4 when credentials are in the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, region from `AWS_REGION` or
//! `AWS_DEFAULT_REGION`), as the AWS CLI would; without them requests go unsigned, which a
//! server in development mode accepts as the default account.

use std::time::SystemTime;

use anyhow::Context;

/// Sends requests, signed when credentials are configured.
pub trait SendSigned {
    fn send_signed(self) -> impl std::future::Future<Output = anyhow::Result<reqwest::Response>> + Send;
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn sign(req: &mut reqwest::Request) -> anyhow::Result<()> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) else {
        return Ok(());
    };
    let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
    let identity = aws_credential_types::Credentials::new(key, secret, env("AWS_SESSION_TOKEN"), None, "env").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("lambda")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .context("cannot sign the request")?
        .into();
    let body = req.body().and_then(|b| b.as_bytes()).unwrap_or_default().to_vec();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    let url = req.url().to_string();
    let signable = SignableRequest::new(
        req.method().as_str(),
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&body),
    )
    .context("cannot sign the request")?;
    let (instructions, _) = sign(signable, &params).context("cannot sign the request")?.into_parts();
    for (name, value) in instructions.headers() {
        req.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes())?,
            reqwest::header::HeaderValue::from_str(value)?,
        );
    }
    Ok(())
}

impl SendSigned for reqwest::RequestBuilder {
    async fn send_signed(self) -> anyhow::Result<reqwest::Response> {
        let (client, req) = self.build_split();
        let mut req = req?;
        sign(&mut req)?;
        Ok(client.execute(req).await?)
    }
}
