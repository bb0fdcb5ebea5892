//! The S3 operations over `store::objects`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use model::objects::{NotificationRule, ObjectChange};
use s3s::dto::*;
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};
use store::objects::{CompleteError, ObjectAttrs, ObjectError, ObjectInfo, ObjectStore, Writer};

use crate::body::{self, FileBody};
use crate::{Keys, ObjectsConfig, RemoteAddr, RequestId};

/// The object API's operations. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    store: ObjectStore,
    keys: Keys,
    config: Arc<ObjectsConfig>,
    /// Called after a change committed events (wakes the relay).
    on_events: Arc<dyn Fn() + Send + Sync>,
    /// Bucket → owning account, for the buckets seen, and a generation bumped by every bucket
    /// deletion: an owner read before a deletion is not cached after it.
    owners: Arc<std::sync::RwLock<(u64, std::collections::HashMap<String, String>)>>,
}

/// Objects up to this size are read in one go and answered from memory.
const SMALL_OBJECT: u64 = 256 * 1024;

/// An object's bytes, opened or (when small) already read.
enum Content {
    Small(bytes::Bytes),
    File(std::fs::File),
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").finish_non_exhaustive()
    }
}

/// What a client sent to check its upload by.
struct Sent {
    md5: Option<String>,
    algorithm: Option<ChecksumAlgorithm>,
    /// CRC32, CRC32C, SHA1, SHA256, CRC64NVME.
    values: [Option<String>; 5],
}

/// Who is asking.
struct Caller {
    account: String,
    principal: String,
}

fn store_error(e: ObjectError) -> S3Error {
    let message = e.to_string();
    match e {
        ObjectError::NoSuchBucket => S3Error::with_message(s3s::S3ErrorCode::NoSuchBucket, message),
        ObjectError::NoSuchKey => S3Error::with_message(s3s::S3ErrorCode::NoSuchKey, message),
        ObjectError::NoSuchUpload => S3Error::with_message(s3s::S3ErrorCode::NoSuchUpload, message),
        ObjectError::BucketAlreadyExists => S3Error::with_message(s3s::S3ErrorCode::BucketAlreadyExists, message),
        ObjectError::BucketAlreadyOwnedByYou => {
            S3Error::with_message(s3s::S3ErrorCode::BucketAlreadyOwnedByYou, message)
        }
        ObjectError::BucketNotEmpty => S3Error::with_message(s3s::S3ErrorCode::BucketNotEmpty, message),
        ObjectError::InvalidPart(_) => S3Error::with_message(s3s::S3ErrorCode::InvalidPart, message),
        ObjectError::InvalidPartOrder => S3Error::with_message(s3s::S3ErrorCode::InvalidPartOrder, message),
        ObjectError::EntityTooSmall(_) => S3Error::with_message(s3s::S3ErrorCode::EntityTooSmall, message),
        ObjectError::PreconditionFailed => S3Error::with_message(s3s::S3ErrorCode::PreconditionFailed, message),
        ObjectError::Store(store::StoreError::Io(e)) => body::io_error(e),
        ObjectError::Store(e) => {
            tracing::error!(error = %e, "object store failed");
            s3_error!(InternalError, "We encountered an internal error. Please try again.")
        }
    }
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

/// A key must be 1..=1024 bytes of UTF-8 (S3's rule).
fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > 1024 {
        return Err(s3_error!(KeyTooLongError, "Your key is too long (the limit is 1024 bytes)."));
    }
    Ok(())
}

/// The checksums a request asks to be verified.
fn hasher(algorithm: Option<&ChecksumAlgorithm>, given: [bool; 5]) -> S3Result<s3s::checksum::ChecksumHasher> {
    let mut h = s3s::checksum::ChecksumHasher::default();
    let [crc32, crc32c, sha1, sha256, crc64] = given;
    if crc32 {
        h.crc32 = Some(Default::default());
    }
    if crc32c {
        h.crc32c = Some(Default::default());
    }
    if sha1 {
        h.sha1 = Some(Default::default());
    }
    if sha256 {
        h.sha256 = Some(Default::default());
    }
    if crc64 {
        h.crc64nvme = Some(Default::default());
    }
    if let Some(alg) = algorithm {
        match alg.as_str() {
            ChecksumAlgorithm::CRC32 => h.crc32 = Some(Default::default()),
            ChecksumAlgorithm::CRC32C => h.crc32c = Some(Default::default()),
            ChecksumAlgorithm::SHA1 => h.sha1 = Some(Default::default()),
            ChecksumAlgorithm::SHA256 => h.sha256 = Some(Default::default()),
            ChecksumAlgorithm::CRC64NVME => h.crc64nvme = Some(Default::default()),
            other => return Err(s3_error!(InvalidArgument, "Unsupported checksum algorithm: {other}")),
        }
    }
    Ok(h)
}

/// Checks what was received against the checksums sent (in headers or trailers); returns
/// them to keep with the object.
fn verify_checksums(
    computed: &Checksum,
    mut sent: [Option<String>; 5],
    trailers: Option<s3s::TrailingHeaders>,
) -> S3Result<std::collections::BTreeMap<String, String>> {
    const NAMES: [&str; 5] = ["crc32", "crc32c", "sha1", "sha256", "crc64nvme"];
    if let Some(t) = trailers.and_then(|t| t.take()) {
        for (i, name) in NAMES.iter().enumerate() {
            if let Some(v) = t.get(format!("x-amz-checksum-{name}").as_str()) {
                sent[i] =
                    Some(v.to_str().map_err(|_| s3_error!(InvalidArgument, "invalid checksum trailer"))?.to_owned());
            }
        }
    }
    let got = [
        &computed.checksum_crc32,
        &computed.checksum_crc32c,
        &computed.checksum_sha1,
        &computed.checksum_sha256,
        &computed.checksum_crc64nvme,
    ];
    let mut kept = std::collections::BTreeMap::new();
    for (i, name) in NAMES.iter().enumerate() {
        if let Some(want) = &sent[i] {
            if got[i].as_deref() != Some(want.as_str()) {
                return Err(s3_error!(
                    BadDigest,
                    "The {} you specified did not match the calculated checksum.",
                    name.to_uppercase()
                ));
            }
            kept.insert((*name).to_string(), want.clone());
        }
    }
    Ok(kept)
}

fn user_metadata(m: Option<Metadata>) -> std::collections::BTreeMap<String, String> {
    m.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
}

/// A continuation token names where the last page stopped (opaque to clients).
fn decode_token(t: &str) -> S3Result<Vec<u8>> {
    hex::decode(t).map_err(|_| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}

impl Objects {
    pub fn new(store: ObjectStore, keys: Keys, config: ObjectsConfig, on_events: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self { store, keys, config: Arc::new(config), on_events, owners: Arc::default() }
    }

    async fn caller<T>(&self, req: &S3Request<T>) -> S3Result<Caller> {
        match &req.credentials {
            Some(c) => match self.keys.lookup(&c.access_key).await? {
                Some((account, _)) => Ok(Caller { account, principal: format!("AWS:{}", c.access_key) }),
                None => Err(s3_error!(InvalidAccessKeyId)),
            },
            None if !self.config.enforced => {
                Ok(Caller { account: self.config.default_account.clone(), principal: "Anonymous".into() })
            }
            None => Err(s3_error!(AccessDenied, "Anonymous access is not allowed")),
        }
    }

    /// The caller's account must own the bucket.
    async fn owned<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<Caller> {
        let caller = self.caller(req).await?;
        let (generation, known) = {
            let owners = self.owners.read().unwrap_or_else(|p| p.into_inner());
            (owners.0, owners.1.get(bucket).cloned())
        };
        let owner = match known {
            Some(owner) => owner,
            None => {
                let name = bucket.to_string();
                let found = self.store.run(move |s| s.bucket(&name)).await.map_err(store_error)?;
                let owner = found.ok_or_else(|| store_error(ObjectError::NoSuchBucket))?.account;
                let mut owners = self.owners.write().unwrap_or_else(|p| p.into_inner());
                if owners.0 == generation {
                    owners.1.insert(bucket.to_string(), owner.clone());
                }
                owner
            }
        };
        if owner != caller.account {
            return Err(s3_error!(AccessDenied, "Access Denied"));
        }
        Ok(caller)
    }

    fn writer<T>(&self, req: &S3Request<T>, caller: &Caller) -> Writer {
        let trace = req.headers.get("x-amzn-trace-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let depth = trace.as_deref().and_then(model::trace::TraceContext::parse).map_or(0, |t| t.depth);
        Writer {
            source_ip: req.extensions.get::<RemoteAddr>().map(|a| a.0.ip().to_string()).unwrap_or_default(),
            principal: caller.principal.clone(),
            request_id: req.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default(),
            depth,
            trace,
            if_absent: false,
        }
    }

    async fn put(&self, req: S3Request<PutObjectInput>, change: ObjectChange) -> S3Result<S3Response<PutObjectOutput>> {
        let caller = self.owned(&req, &req.input.bucket).await?;
        let mut writer = self.writer(&req, &caller);
        writer.if_absent = req.input.if_none_match.as_ref().is_some_and(|c| c.is_any());
        let max = self.config.max_object_size;
        let input = req.input;
        check_key(&input.key)?;
        if input.content_length.is_some_and(|n| n as u64 > max) {
            return Err(body::too_large(max));
        }
        let sent = Sent {
            md5: input.content_md5,
            algorithm: input.checksum_algorithm,
            values: [
                input.checksum_crc32,
                input.checksum_crc32c,
                input.checksum_sha1,
                input.checksum_sha256,
                input.checksum_crc64nvme,
            ],
        };
        let (written, checksums) = self.receive(input.body, sent, max, req.trailing_headers, true).await?;
        let mut attrs = attrs_of(
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.website_redirect_location,
            input.metadata,
        );
        attrs.checksums = checksums;
        let etag_hex = hex::encode(written.md5);
        let (bucket, key, size) = (input.bucket, input.key, written.size);
        let body = written.body;
        let (e, a) = (etag_hex.clone(), attrs.clone());
        let (_, events) = self
            .store
            .run(move |s| match body {
                body::Received::Inline(data) => s.put_inline(&bucket, &key, &data, &e, &a, change, &writer),
                body::Received::Staged(staged) => s.put(&bucket, &key, staged, size, &e, &a, change, &writer),
            })
            .await
            .map_err(store_error)?;
        self.committed(events);
        let c = |n: &str| attrs.checksums.get(n).cloned();
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&etag_hex)),
            checksum_crc32: c("crc32"),
            checksum_crc32c: c("crc32c"),
            checksum_sha1: c("sha1"),
            checksum_sha256: c("sha256"),
            checksum_crc64nvme: c("crc64nvme"),
            ..Default::default()
        }))
    }

    /// Streams an upload's body to staging and checks it against what the client sent
    /// (Content-MD5, checksums in headers or trailers); returns the checksums to keep.
    /// `inline`: a small body may stay in memory (objects; parts are always files).
    async fn receive(
        &self,
        body: Option<StreamingBlob>,
        sent: Sent,
        max: u64,
        trailers: Option<s3s::TrailingHeaders>,
        inline: bool,
    ) -> S3Result<(body::Written, std::collections::BTreeMap<String, String>)> {
        let given = sent.values.each_ref().map(Option::is_some);
        let h = hasher(sent.algorithm.as_ref(), given)?;
        let body = body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let written = body::receive(&self.store, body, max, h, inline).await?;
        if let Some(md5) = &sent.md5 {
            let sent = base64::engine::general_purpose::STANDARD
                .decode(md5)
                .map_err(|_| s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."))?;
            if sent != written.md5 {
                return Err(s3_error!(BadDigest, "The Content-MD5 you specified did not match what we received."));
            }
        }
        let kept = verify_checksums(&written.checksums, sent.values, trailers)?;
        Ok((written, kept))
    }

    fn committed(&self, events: usize) {
        if events > 0 {
            (self.on_events)();
        }
    }

    /// The object's bytes, opened (a concurrent overwrite may remove the file between the
    /// lookup and the open: then the new object is read).
    async fn open(&self, bucket: &str, key: &str, whole: bool) -> S3Result<(ObjectInfo, Content)> {
        let (b, k) = (bucket.to_string(), key.to_string());
        self.store
            .run(move |s| {
                for _ in 0..3 {
                    let (info, data) = s.get(&b, &k)?;
                    let Some(path) = s.object_path(&info) else {
                        return Ok(Ok((info, Content::Small(data.unwrap_or_default().into()))));
                    };
                    match std::fs::File::open(path) {
                        Ok(mut f) if whole && info.size <= SMALL_OBJECT => {
                            let mut buf = Vec::with_capacity(info.size as usize);
                            std::io::Read::read_to_end(&mut f, &mut buf)?;
                            return Ok(Ok((info, Content::Small(buf.into()))));
                        }
                        Ok(f) => return Ok(Ok((info, Content::File(f)))),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Err(s3_error!(InternalError, "The object kept changing while it was read; try again.")))
            })
            .await
            .map_err(store_error)?
    }
}

fn attrs_of(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    website_redirect_location: Option<String>,
    metadata: Option<Metadata>,
) -> ObjectAttrs {
    ObjectAttrs {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        website_redirect_location,
        metadata: user_metadata(metadata),
        checksums: Default::default(),
    }
}

fn metadata_of(a: &ObjectAttrs) -> Option<Metadata> {
    (!a.metadata.is_empty()).then(|| a.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn content_type_of(a: &ObjectAttrs) -> Option<ContentType> {
    // S3's answer for objects stored without a type.
    Some(a.content_type.clone().unwrap_or_else(|| "binary/octet-stream".into()))
}

/// A form upload's fields, as the PUT they amount to.
fn post_as_put(p: PostObjectInput) -> PutObjectInput {
    PutObjectInput {
        body: p.body,
        bucket: p.bucket,
        key: p.key,
        cache_control: p.cache_control,
        content_disposition: p.content_disposition,
        content_encoding: p.content_encoding,
        content_language: p.content_language,
        content_length: p.content_length,
        content_md5: p.content_md5,
        content_type: p.content_type,
        metadata: p.metadata,
        website_redirect_location: p.website_redirect_location,
        checksum_algorithm: p.checksum_algorithm,
        checksum_crc32: p.checksum_crc32,
        checksum_crc32c: p.checksum_crc32c,
        checksum_sha1: p.checksum_sha1,
        checksum_sha256: p.checksum_sha256,
        checksum_crc64nvme: p.checksum_crc64nvme,
        ..Default::default()
    }
}

fn to_rule(c: LambdaFunctionConfiguration) -> NotificationRule {
    let mut rule = NotificationRule {
        id: c.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        function_arn: c.lambda_function_arn,
        events: c.events.into_iter().map(String::from).collect(),
        prefix: None,
        suffix: None,
    };
    for f in c.filter.and_then(|f| f.key).and_then(|k| k.filter_rules).unwrap_or_default() {
        let name = f.name.map(|n| n.as_str().to_ascii_lowercase()).unwrap_or_default();
        match name.as_str() {
            "prefix" => rule.prefix = f.value,
            "suffix" => rule.suffix = f.value,
            _ => {}
        }
    }
    rule
}

fn from_rule(r: NotificationRule) -> LambdaFunctionConfiguration {
    let mut rules = Vec::new();
    if let Some(p) = r.prefix {
        rules.push(FilterRule { name: Some(FilterRuleName::from_static(FilterRuleName::PREFIX)), value: Some(p) });
    }
    if let Some(s) = r.suffix {
        rules.push(FilterRule { name: Some(FilterRuleName::from_static(FilterRuleName::SUFFIX)), value: Some(s) });
    }
    LambdaFunctionConfiguration {
        events: r.events.into_iter().map(Event::from).collect(),
        filter: (!rules.is_empty())
            .then_some(NotificationConfigurationFilter { key: Some(S3KeyFilter { filter_rules: Some(rules) }) }),
        id: Some(r.id),
        lambda_function_arn: r.function_arn,
    }
}

#[async_trait::async_trait]
impl S3 for Objects {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let caller = self.caller(&req).await?;
        let name = req.input.bucket.clone();
        model::objects::validate_bucket_name(&name).map_err(|m| s3_error!(InvalidBucketName, "{m}"))?;
        let account = caller.account.clone();
        let n = name.clone();
        self.store.run(move |s| s.create_bucket(&n, &account)).await.map_err(store_error)?;
        tracing::info!(bucket = %name, account = %caller.account, "bucket created");
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(self.config.region.clone()), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        // us-east-1 is reported as an empty location, as S3 does.
        let region = &self.config.region;
        let location = (region != "us-east-1").then(|| BucketLocationConstraint::from(region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint: location }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let name = req.input.bucket.clone();
        let deleted = self.store.run(move |s| s.delete_bucket(&name)).await.map_err(store_error);
        {
            let mut owners = self.owners.write().unwrap_or_else(|p| p.into_inner());
            owners.0 += 1;
            owners.1.remove(&req.input.bucket);
        }
        deleted?;
        tracing::info!(bucket = %req.input.bucket, "bucket deleted");
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = self.caller(&req).await?;
        let account = caller.account.clone();
        let buckets = self.store.run(move |s| s.list_buckets(&account)).await.map_err(store_error)?;
        let buckets = buckets
            .into_iter()
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(self.config.region.clone()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner { display_name: None, id: Some(caller.account) }),
            ..Default::default()
        }))
    }

    async fn put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
        let caller = self.owned(&req, &req.input.bucket).await?;
        let config = req.input.notification_configuration;
        if config.queue_configurations.as_ref().is_some_and(|q| !q.is_empty())
            || config.topic_configurations.as_ref().is_some_and(|t| !t.is_empty())
            || config.event_bridge_configuration.is_some()
        {
            return Err(s3_error!(
                InvalidArgument,
                "Only LambdaFunctionConfigurations are supported: queue, topic and EventBridge destinations are not"
            ));
        }
        let rules: Vec<NotificationRule> =
            config.lambda_function_configurations.unwrap_or_default().into_iter().map(to_rule).collect();
        for r in &rules {
            r.validate().map_err(|m| s3_error!(InvalidArgument, "{m}"))?;
            let target = model::FunctionRef::parse(&r.function_arn, model::NameUse::Reference).map_err(|_| {
                s3_error!(
                    InvalidArgument,
                    "Unable to validate the following destination configurations: {} is not a Lambda function ARN",
                    r.function_arn
                )
            })?;
            if !r.function_arn.starts_with("arn:") || target.account.as_deref().is_some_and(|a| a != caller.account) {
                return Err(s3_error!(
                    InvalidArgument,
                    "Unable to validate the following destination configurations: {} (the function must be named by an ARN in the bucket owner's account)",
                    r.function_arn
                ));
            }
        }
        if let Some((a, b)) = model::objects::overlapping(&rules) {
            return Err(s3_error!(
                InvalidArgument,
                "Configurations overlap. Configurations on the same bucket cannot share a common event type. ({a}, {b})"
            ));
        }
        let bucket = req.input.bucket.clone();
        let count = rules.len();
        self.store.run(move |s| s.set_notifications(&bucket, &rules)).await.map_err(store_error)?;
        tracing::info!(bucket = %req.input.bucket, rules = count, "bucket notifications set");
        Ok(S3Response::new(PutBucketNotificationConfigurationOutput {}))
    }

    async fn get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let bucket = req.input.bucket.clone();
        let rules = self.store.run(move |s| s.notifications(&bucket)).await.map_err(store_error)?;
        let configs: Vec<_> = rules.into_iter().map(from_rule).collect();
        Ok(S3Response::new(GetBucketNotificationConfigurationOutput {
            lambda_function_configurations: (!configs.is_empty()).then_some(configs),
            ..Default::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        self.put(req, ObjectChange::Put).await
    }

    /// A browser-style form upload (its event is `ObjectCreated:Post`).
    async fn post_object(&self, req: S3Request<PostObjectInput>) -> S3Result<S3Response<PostObjectOutput>> {
        let resp = self.put(req.map_input(post_as_put), ObjectChange::Post).await?;
        Ok(resp.map_output(|o| PostObjectOutput {
            e_tag: o.e_tag,
            checksum_crc32: o.checksum_crc32,
            checksum_crc32c: o.checksum_crc32c,
            checksum_sha1: o.checksum_sha1,
            checksum_sha256: o.checksum_sha256,
            checksum_crc64nvme: o.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let input = req.input;
        let (info, content) = self.open(&input.bucket, &input.key, input.range.is_none()).await?;
        if let Some(ETagCondition::ETag(want)) = &input.if_match
            && want.value() != info.etag
        {
            return Err(s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold"));
        }
        let (start, len, content_range) = match &input.range {
            None => (0, info.size, None),
            Some(r) => {
                let r = r
                    .check(info.size)
                    .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
                (r.start, r.end - r.start, Some(format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), info.size)))
            }
        };
        let whole = content_range.is_none();
        let body = match content {
            Content::Small(bytes) => {
                let (a, b) = ((start as usize).min(bytes.len()), ((start + len) as usize).min(bytes.len()));
                let part = bytes.slice(a..b);
                StreamingBlob::from(s3s::Body::from(part))
            }
            Content::File(file) => StreamingBlob::new(FileBody::open(file, start, len).await.map_err(body::io_error)?),
        };
        let a = &info.attrs;
        let c = |n: &str| if whole { a.checksums.get(n).cloned() } else { None };
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            last_modified: Some(timestamp(info.modified_ms)),
            e_tag: Some(etag(&info.etag)),
            content_type: content_type_of(a),
            content_encoding: a.content_encoding.clone(),
            content_disposition: a.content_disposition.clone(),
            content_language: a.content_language.clone(),
            cache_control: a.cache_control.clone(),
            website_redirect_location: a.website_redirect_location.clone(),
            metadata: metadata_of(a),
            checksum_crc32: c("crc32"),
            checksum_crc32c: c("crc32c"),
            checksum_sha1: c("sha1"),
            checksum_sha256: c("sha256"),
            checksum_crc64nvme: c("crc64nvme"),
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let (b, k) = (req.input.bucket.clone(), req.input.key.clone());
        let info = self.store.run(move |s| s.head(&b, &k)).await.map_err(store_error)?;
        let a = &info.attrs;
        let c = |n: &str| a.checksums.get(n).cloned();
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(info.size as i64),
            accept_ranges: Some("bytes".into()),
            last_modified: Some(timestamp(info.modified_ms)),
            e_tag: Some(etag(&info.etag)),
            content_type: content_type_of(a),
            content_encoding: a.content_encoding.clone(),
            content_disposition: a.content_disposition.clone(),
            content_language: a.content_language.clone(),
            cache_control: a.cache_control.clone(),
            website_redirect_location: a.website_redirect_location.clone(),
            metadata: metadata_of(a),
            checksum_crc32: c("crc32"),
            checksum_crc32c: c("crc32c"),
            checksum_sha1: c("sha1"),
            checksum_sha256: c("sha256"),
            checksum_crc64nvme: c("crc64nvme"),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let caller = self.owned(&req, &req.input.bucket).await?;
        let writer = self.writer(&req, &caller);
        let (b, k) = (req.input.bucket.clone(), req.input.key.clone());
        let w = writer.clone();
        let existed = self.store.run(move |s| s.delete(&b, &k, &w)).await.map_err(store_error)?;
        if existed {
            self.committed(1);
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let caller = self.owned(&req, &req.input.bucket).await?;
        let writer = self.writer(&req, &caller);
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let objects = req.input.delete.objects;
        if objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "The request may name at most 1000 objects"));
        }
        let bucket = req.input.bucket.clone();
        let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
        let results = self
            .store
            .run(move |s| Ok(keys.into_iter().map(|k| (s.delete(&bucket, &k, &writer), k)).collect::<Vec<_>>()))
            .await
            .map_err(store_error)?;
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for (result, key) in results {
            match result {
                Ok(existed) => {
                    if existed {
                        self.committed(1);
                    }
                    if !quiet {
                        deleted.push(DeletedObject { key: Some(key), ..Default::default() });
                    }
                }
                Err(e) => errors.push(s3s::dto::Error {
                    key: Some(key),
                    code: Some("InternalError".into()),
                    message: Some(e.to_string()),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let caller = self.owned(&req, &req.input.bucket).await?;
        let writer = self.writer(&req, &caller);
        let input = req.input;
        check_key(&input.key)?;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "Only bucket/key copy sources are supported"));
        };
        let src_owner = {
            let b = src_bucket.to_string();
            self.store.run(move |s| s.bucket(&b)).await.map_err(store_error)?
        };
        match src_owner {
            None => return Err(store_error(ObjectError::NoSuchBucket)),
            Some(b) if b.account != caller.account => return Err(s3_error!(AccessDenied, "Access Denied")),
            Some(_) => {}
        }
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let same = **src_bucket == *input.bucket && **src_key == *input.key;
        if same && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let attrs = replace.then(|| {
            attrs_of(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
                input.website_redirect_location,
                input.metadata,
            )
        });
        let (sb, sk, db, dk) = (src_bucket.to_string(), src_key.to_string(), input.bucket.clone(), input.key.clone());
        let max = self.config.max_object_size;
        let (info, events) = self
            .store
            .run(move |s| {
                let src = s.head(&sb, &sk)?;
                if src.size > max {
                    return Ok(Err(body::too_large(max)));
                }
                Ok(Ok(s.copy((&sb, &sk), (&db, &dk), attrs.as_ref(), &writer)?))
            })
            .await
            .map_err(store_error)??;
        self.committed(events);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&info.etag)),
                last_modified: Some(timestamp(info.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.owned(&req, &req.input.bucket).await?;
        let input = req.input;
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => Some(decode_token(t)?),
            (None, Some(s)) => Some(s.as_bytes().to_vec()),
            (None, None) => None,
        };
        let (b, p, d) = (input.bucket.clone(), input.prefix.clone().unwrap_or_default(), input.delimiter.clone());
        let page =
            self.store.run(move |s| s.list(&b, &p, d.as_deref(), after.as_deref(), max)).await.map_err(store_error)?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { urlencode(&s) } else { s };
        let count = page.objects.len() + page.prefixes.len();
        let contents: Vec<Object> = page
            .objects
            .into_iter()
            .map(|o| Object {
                key: Some(enc(o.key)),
                size: Some(o.size as i64),
                e_tag: Some(etag(&o.etag)),
                last_modified: Some(timestamp(o.modified_ms)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let prefixes: Vec<CommonPrefix> =
            page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(input.prefix.map(enc).unwrap_or_default()),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max as i32),
            key_count: Some(count as i32),
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next,
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(enc),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let input = req.input;
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = input.marker.as_ref().map(|m| m.as_bytes().to_vec());
        let (b, p, d) = (input.bucket.clone(), input.prefix.clone().unwrap_or_default(), input.delimiter.clone());
        let page =
            self.store.run(move |s| s.list(&b, &p, d.as_deref(), after.as_deref(), max)).await.map_err(store_error)?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { urlencode(&s) } else { s };
        // Version 1 continues from the last key or prefix returned (NextMarker).
        let next_marker = page.next.as_ref().map(|_| {
            let last_key = page.objects.last().map(|o| o.key.clone());
            let last_prefix = page.prefixes.last().cloned();
            last_key.into_iter().chain(last_prefix).max().unwrap_or_default()
        });
        let contents: Vec<Object> = page
            .objects
            .into_iter()
            .map(|o| Object {
                key: Some(enc(o.key)),
                size: Some(o.size as i64),
                e_tag: Some(etag(&o.etag)),
                last_modified: Some(timestamp(o.modified_ms)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let prefixes: Vec<CommonPrefix> =
            page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(input.prefix.map(enc).unwrap_or_default()),
            delimiter: input.delimiter.map(enc),
            marker: input.marker,
            max_keys: Some(max as i32),
            is_truncated: Some(next_marker.is_some()),
            next_marker: next_marker.map(enc),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let input = req.input;
        check_key(&input.key)?;
        let attrs = attrs_of(
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.website_redirect_location,
            input.metadata,
        );
        let (b, k) = (input.bucket.clone(), input.key.clone());
        let upload = self.store.run(move |s| s.create_upload(&b, &k, &attrs)).await.map_err(store_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let input = req.input;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"));
        }
        let max = self.config.max_object_size.min(DEFAULT_PART_MAX);
        if input.content_length.is_some_and(|n| n as u64 > max) {
            return Err(body::too_large(max));
        }
        let (b, k, id) = (input.bucket.clone(), input.key.clone(), input.upload_id.clone());
        self.store.run(move |s| s.upload(&b, &k, &id)).await.map_err(store_error)?;
        let sent = Sent {
            md5: input.content_md5,
            algorithm: input.checksum_algorithm,
            values: [
                input.checksum_crc32,
                input.checksum_crc32c,
                input.checksum_sha1,
                input.checksum_sha256,
                input.checksum_crc64nvme,
            ],
        };
        let (written, kept) = self.receive(input.body, sent, max, req.trailing_headers, false).await?;
        let etag_hex = hex::encode(written.md5);
        let body::Received::Staged(staged) = written.body else {
            return Err(s3_error!(InternalError, "a part was not staged"));
        };
        let (id, n, size, e) = (input.upload_id, input.part_number as u32, written.size, etag_hex.clone());
        self.store.run(move |s| s.put_part(&id, n, staged, size, &e)).await.map_err(store_error)?;
        let c = |n: &str| kept.get(n).cloned();
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&etag_hex)),
            checksum_crc32: c("crc32"),
            checksum_crc32c: c("crc32c"),
            checksum_sha1: c("sha1"),
            checksum_sha256: c("sha256"),
            checksum_crc64nvme: c("crc64nvme"),
            ..Default::default()
        }))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let input = req.input;
        let (b, k, id) = (input.bucket.clone(), input.key.clone(), input.upload_id.clone());
        let parts = self
            .store
            .run(move |s| {
                s.upload(&b, &k, &id)?;
                s.parts(&id)
            })
            .await
            .map_err(store_error)?;
        let after = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let rest: Vec<_> = parts.into_iter().filter(|p| p.number > after).collect();
        let truncated = rest.len() > max;
        let page: Vec<Part> = rest
            .into_iter()
            .take(max)
            .map(|p| Part {
                part_number: Some(p.number as i32),
                size: Some(p.size as i64),
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(timestamp(p.modified_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            is_truncated: Some(truncated),
            next_part_number_marker: page.last().and_then(|p| p.part_number),
            max_parts: Some(max as i32),
            parts: Some(page),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let (b, p) = (req.input.bucket.clone(), req.input.prefix.clone().unwrap_or_default());
        let uploads = self.store.run(move |s| s.list_uploads(&b, &p)).await.map_err(store_error)?;
        let uploads: Vec<MultipartUpload> = uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.id),
                initiated: Some(timestamp(u.created_ms)),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(req.input.bucket),
            prefix: req.input.prefix,
            is_truncated: Some(false),
            uploads: (!uploads.is_empty()).then_some(uploads),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let caller = self.owned(&req, &req.input.bucket).await?;
        let writer = self.writer(&req, &caller);
        let input = req.input;
        let chosen: Vec<(u32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.part_number.unwrap_or(0).max(0) as u32, p.e_tag.map(ETag::into_value).unwrap_or_default()))
            .collect();
        if chosen.is_empty() {
            return Err(s3_error!(MalformedXML, "You must specify at least one part"));
        }
        let max = self.config.max_object_size;
        let (b, k, id) = (input.bucket.clone(), input.key.clone(), input.upload_id.clone());
        let result = self
            .store
            .run(move |s| {
                let upload = s.upload(&b, &k, &id)?;
                Ok(s.complete_upload(&upload, &chosen, max, &writer))
            })
            .await
            .map_err(store_error)?;
        let (info, events) = match result {
            Ok(r) => r,
            Err(CompleteError::TooLarge(_)) => return Err(body::too_large(max)),
            Err(CompleteError::Object(e)) => return Err(store_error(e)),
        };
        self.committed(events);
        let (bucket, key, e) = (input.bucket, input.key, info.etag);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            location: Some(format!("/{bucket}/{key}")),
            bucket: Some(bucket),
            key: Some(key),
            e_tag: Some(etag(&e)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.owned(&req, &req.input.bucket).await?;
        let (b, k, id) = (req.input.bucket.clone(), req.input.key.clone(), req.input.upload_id.clone());
        self.store
            .run(move |s| {
                s.upload(&b, &k, &id)?;
                s.abort_upload(&id)
            })
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

/// S3's limit for one part (5 GiB).
const DEFAULT_PART_MAX: u64 = 5 << 30;

/// `EncodingType=url`: keys percent-encoded as S3 does (unreserved characters and `/` kept).
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
