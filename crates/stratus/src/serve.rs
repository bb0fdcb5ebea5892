//! `stratus serve`: open the data directory, find the runtimes, start the invoker and serve
//! the API until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use model::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthArg {
    Enforced,
    Development,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where functions, code, logs and the queue are kept.
    #[arg(long, env = "STRATUS_DATA_DIR", default_value = "./.stratus")]
    data_dir: PathBuf,
    /// Address of the Lambda API (use port 0 for any free port).
    #[arg(long, env = "STRATUS_LISTEN", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Address of the HTTP front: function URLs and HTTP routes (port 0: any free port).
    #[arg(long, env = "STRATUS_HTTP_LISTEN", default_value = "127.0.0.1:9002")]
    http_listen: SocketAddr,
    /// Address of the S3-compatible object API (port 0: any free port).
    #[arg(long, env = "STRATUS_S3_LISTEN", default_value = "127.0.0.1:9003")]
    s3_listen: SocketAddr,
    /// The largest object accepted, in bytes (one PUT, or a completed multipart upload).
    #[arg(long, env = "STRATUS_MAX_OBJECT_SIZE", default_value_t = objects::DEFAULT_MAX_OBJECT_SIZE)]
    max_object_size: u64,
    /// Domain of function URL hosts, `<url-id>.lambda-url.<region>.<domain>`. Browsers and
    /// curl resolve every `*.localhost` name to this machine.
    #[arg(long, env = "STRATUS_URL_DOMAIN", default_value = "localhost")]
    url_domain: String,
    /// The largest request body a function URL or HTTP route accepts, in bytes.
    #[arg(long, env = "STRATUS_HTTP_MAX_BODY", default_value_t = triggers::http::DEFAULT_MAX_BODY)]
    http_max_body: usize,
    /// Region named in ARNs.
    #[arg(long, env = "STRATUS_REGION", default_value = "us-east-1")]
    region: String,
    /// Account id named in ARNs (12 digits).
    #[arg(long, env = "STRATUS_ACCOUNT", default_value = "000000000000")]
    account: String,
    /// Seconds an idle execution environment is kept warm before it is stopped.
    #[arg(long, env = "STRATUS_KEEP_ALIVE", default_value_t = 300)]
    keep_alive: u64,
    /// The most execution environments one function may run at once (a safety cap; the
    /// account's concurrency is the limit that normally applies).
    #[arg(long, env = "STRATUS_MAX_ENVIRONMENTS", default_value_t = 1000)]
    max_environments: usize,
    /// Invocations the account may have in flight across all functions (Lambda's default).
    #[arg(long, env = "STRATUS_ACCOUNT_CONCURRENCY", default_value_t = 1000)]
    account_concurrency: usize,
    /// New execution environments one function may start per --scaling-window-secs.
    #[arg(long, env = "STRATUS_SCALING_BURST", default_value_t = 1000)]
    scaling_burst: u32,
    #[arg(long, env = "STRATUS_SCALING_WINDOW_SECS", default_value_t = 10)]
    scaling_window_secs: u64,
    /// Seconds before the first retry of a failed asynchronous invocation (the second waits twice as long).
    #[arg(long, env = "STRATUS_ASYNC_RETRY_DELAY", default_value_t = 60)]
    async_retry_delay: u64,
    /// Run functions WITHOUT isolation, as plain processes with the server's privileges. For
    /// development on hosts where Stratus cannot isolate (not root, no cgroups); never for
    /// code you do not trust.
    #[arg(long, env = "STRATUS_UNISOLATED")]
    unisolated: bool,
    /// Milliseconds an idle environment runs on before it is frozen (paused) until its next
    /// invocation; 0 freezes as soon as an invocation ends.
    #[arg(long, env = "STRATUS_FREEZE_AFTER_MS", default_value_t = invoke::DEFAULT_FREEZE_AFTER.as_millis() as u64)]
    freeze_after_ms: u64,
    /// Never freeze idle environments.
    #[arg(long, env = "STRATUS_NO_FREEZE", conflicts_with = "freeze_after_ms")]
    no_freeze: bool,
    /// Leave /sys/kernel/rcu_expedited alone. By default Stratus turns it on while it runs
    /// (and restores it when it stops): it makes moving a new environment into its cgroups
    /// ~0.3 ms instead of ~6.5 ms, at the cost of brief interrupts on every CPU host-wide.
    #[arg(long, env = "STRATUS_NO_EXPEDITED_RCU")]
    no_expedited_rcu: bool,
    /// Do not give each environment a user namespace of its own (by default it gets one where
    /// the host allows, and its function sees itself as uid 993, gid 990, as on Lambda).
    #[arg(long, env = "STRATUS_NO_USER_NAMESPACE")]
    no_user_namespace: bool,
    /// A JSON file overriding AWS's us-east-1 prices, for everyone and per account (see
    /// README: "Usage, cost and metrics").
    #[arg(long, env = "STRATUS_PRICES")]
    prices: Option<PathBuf>,
    /// Do not record invocations in the ledger or the metrics (for measuring what metering
    /// costs; usage reports then miss these invocations).
    #[arg(long, env = "STRATUS_NO_METERING")]
    no_metering: bool,
    /// How API requests are authenticated: `enforced` (every request signed by an access key
    /// of `stratus accounts`) or `development` (keys that exist are verified; unsigned requests
    /// and unknown keys act as the default account). Default: development when listening on
    /// loopback, enforced otherwise; development is refused on any other address.
    #[arg(long, env = "STRATUS_AUTH", value_enum)]
    auth: Option<AuthArg>,
    /// Export a span per invocation to this OpenTelemetry collector (OTLP/HTTP, JSON):
    /// `http://host:4318` sends to `…/v1/traces`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The service name spans carry.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "stratus")]
    otel_service_name: String,
    /// Accept `rate(N seconds)` schedules (for tests: EventBridge Scheduler's smallest unit is
    /// a minute).
    #[arg(long, env = "STRATUS_SCHEDULE_SECONDS", hide = true)]
    schedule_seconds: bool,
    /// Bytes of logs kept per function before the oldest are removed.
    #[arg(long, env = "STRATUS_LOG_BUDGET", default_value_t = 64 << 20)]
    log_budget: u64,
    /// Join a cluster whose state is in this PostgreSQL database
    /// (`postgres://user:password@host:port/database`; needs --nats-url too). Without it,
    /// Stratus runs on its own, its state in the data directory.
    #[arg(long, env = "STRATUS_DATABASE_URL", requires = "nats_url", help_heading = "Cluster")]
    database_url: Option<String>,
    /// The cluster's NATS server(s) (`nats://host:4222`), for signals between nodes.
    #[arg(long, env = "STRATUS_NATS_URL", requires = "database_url", help_heading = "Cluster")]
    nats_url: Option<String>,
    /// This node's id in the cluster (default: made up once and kept in the data directory).
    #[arg(long, env = "STRATUS_NODE_ID", help_heading = "Cluster")]
    node_id: Option<String>,
    /// The API address the other nodes reach this one at (`http://host:port`; default: the
    /// --listen address).
    #[arg(long, env = "STRATUS_ADVERTISE", help_heading = "Cluster")]
    advertise: Option<String>,
    /// How long a stopping cluster node waits for its invocations in flight to finish.
    #[arg(long, env = "STRATUS_DRAIN_SECS", default_value_t = 30, help_heading = "Cluster")]
    drain_secs: u64,
}

/// This node's id: given, or made up once and kept in the data directory.
fn node_id(args: &ServeArgs, data_dir: &std::path::Path) -> anyhow::Result<String> {
    if let Some(id) = &args.node_id {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            anyhow::bail!("--node-id takes letters, digits, '-' and '_', got {id:?}");
        }
        return Ok(id.clone());
    }
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    std::fs::write(&path, format!("{id}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    if args.account.len() != 12 || !args.account.chars().all(|c| c.is_ascii_digit()) {
        anyhow::bail!("--account must be 12 digits, got {:?}", args.account);
    }
    let scope = Scope { region: args.region.clone(), account: args.account.clone() };
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let log_limits = store::LogLimits { budget_per_function: args.log_budget, ..Default::default() };
    store::set_background_thread_hook(sandbox::tuning::background_thread);
    // Bound before anything else, so a cluster node can advertise where it listens.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let node = match (&args.database_url, &args.nats_url) {
        (Some(database_url), Some(nats_url)) => {
            let config = cluster::ClusterConfig {
                database_url: database_url.clone(),
                nats_url: nats_url.clone(),
                node_id: node_id(&args, &data_dir)?,
                address: args.advertise.clone().unwrap_or_else(|| format!("http://{}", reachable(addr))),
            };
            Some(cluster::Node::join(config).await.map_err(|e| {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason.push_str(&format!(": {s}"));
                    source = s.source();
                }
                anyhow::anyhow!("cannot join the cluster: {reason}")
            })?)
        }
        _ => None,
    };
    let store = match &node {
        Some(n) => store::Store::open_cluster(&data_dir, log_limits, n.stores(), &scope.account),
        None => store::Store::open(&data_dir, log_limits),
    }
    .context("cannot open the data directory")?;
    match store.collect_garbage() {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed unreferenced code packages"),
        Err(e) => tracing::warn!(error = %e, "cannot collect unreferenced code packages"),
    }
    let prices = match &args.prices {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            model::pricing::PriceBook::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => model::pricing::PriceBook::default(),
    };
    let metrics = if args.no_metering {
        tracing::warn!("--no-metering: invocations are not recorded in the ledger or the metrics");
        None
    } else {
        Some(install_metrics()?)
    };
    let auth_mode = auth_mode(&args)?;
    let mut config = invoke::InvokerConfig::new(scope.clone(), &data_dir);
    config.metering = !args.no_metering;
    config.otlp = args.otlp_endpoint.as_ref().map(|e| {
        let e = e.trim_end_matches('/');
        let url = if e.ends_with("/v1/traces") { e.to_string() } else { format!("{e}/v1/traces") };
        tracing::info!(%url, "exporting a trace span per invocation");
        (url, args.otel_service_name.clone())
    });
    config.keep_alive = Duration::from_secs(args.keep_alive);
    config.max_envs_per_function = args.max_environments.max(1);
    config.async_retry_delay = Duration::from_secs(args.async_retry_delay);
    config.freeze_after = (!args.no_freeze).then(|| Duration::from_millis(args.freeze_after_ms));
    config.account_concurrency = args.account_concurrency.max(1);
    config.scaling_burst = args.scaling_burst.max(1);
    config.scaling_window = Duration::from_secs(args.scaling_window_secs.max(1));
    runtimes::install_bootstraps(&config.runtime_dir).context("cannot install the runtime bootstraps")?;
    let catalogue = runtimes::Catalogue::detect();
    runtimes::precompile(&catalogue, &config.runtime_dir);
    let names: Vec<&str> = catalogue.available().iter().map(|a| a.id.as_str()).collect();
    tracing::info!(runtimes = %names.join(", "), "runtimes available on this host");
    let backend = choose_backend(&args, &data_dir)?;
    let _rcu = if backend.isolated() && !args.no_expedited_rcu {
        match sandbox::tuning::ExpeditedRcu::enable() {
            Ok(Some(guard)) => {
                tracing::info!(
                    "set /sys/kernel/rcu_expedited=1 for faster cold starts (restored at shutdown; --no-expedited-rcu leaves it)"
                );
                Some(guard)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot enable expedited RCU; cold starts pay ~6 ms more for joining cgroups");
                None
            }
        }
    } else {
        None
    };
    let accounts = match &node {
        Some(n) => store::accounts::Accounts::open_cluster(&n.stores().pool, &scope.account).await,
        None => store::accounts::Accounts::open(&data_dir, &scope.account),
    }
    .context("cannot open the accounts")?;
    config.cluster = node.as_ref().map(|n| invoke::ClusterHandle(Arc::new(n.clone())));
    let http_listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (the HTTP front; --http-listen)", args.http_listen))?;
    let s3_listener = tokio::net::TcpListener::bind(args.s3_listen)
        .await
        .with_context(|| format!("cannot listen on {} (the object API; --s3-listen)", args.s3_listen))?;
    let http_addr = http_listener.local_addr()?;
    let s3_addr = s3_listener.local_addr()?;
    let objects_store = match &node {
        Some(n) => {
            store::objects::ObjectStore::open_cluster(&data_dir.join("objects"), &n.stores().pool, n.incarnation())
        }
        None => store::objects::ObjectStore::open(&data_dir.join("objects")),
    }
    .context("cannot open the object store")?;
    let shared = Arc::new(Shared {
        config,
        store: store.clone(),
        catalogue,
        backend,
        log_limits,
        prices: Arc::new(prices),
        accounts: accounts.clone(),
        http_port: http_addr.port(),
        api_url: format!("http://{}", reachable(addr)),
        s3_url: format!("http://{}", reachable(s3_addr)),
        url_domain: args.url_domain.clone(),
        http_max_body: args.http_max_body,
        schedule_seconds: args.schedule_seconds,
        cluster: node.as_ref().map(|n| n.stores().clone()),
        node: node.clone(),
    });
    let default_state = shared.tenant(&scope.account)?;
    let front = default_state.http.clone();
    let factory_shared = shared.clone();
    let platform = api::platform::Platform::new(
        api::auth::Authenticator::new(accounts.clone(), auth_mode, scope.account.clone(), scope.region.clone()),
        default_state,
        Box::new(move |account| factory_shared.tenant(account).map_err(|e| format!("{e:#}"))),
        metrics,
    );
    platform.start_all().await.map_err(|e| anyhow::anyhow!("cannot start the accounts: {}", e.message))?;
    if let Some(n) = &node {
        platform.set_cluster(n.clone());
        let p = platform.clone();
        n.on_change(move |change| p.apply_change(&change));
        let p = platform.clone();
        n.report_load(move || {
            let invokers = p.invokers();
            serde_json::json!({ "in_flight": invokers.iter().map(|i| i.in_flight()).sum::<usize>() })
        });
        // Every node runs every account's schedulers, pollers and queue: accounts created
        // through another node (or `stratus accounts`) start here within seconds.
        let p = platform.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if let Err(e) = p.start_all().await {
                    tracing::warn!(error = %e.message, "cannot start the cluster's accounts");
                }
            }
        });
    }
    match auth_mode {
        api::auth::AuthMode::Enforced => {
            tracing::info!("API requests must be signed with an access key (stratus accounts keys create)")
        }
        api::auth::AuthMode::Development => tracing::warn!(
            "development authentication: unsigned requests and unknown access keys act as account {} (known keys are still verified); --auth enforced to require keys",
            scope.account
        ),
    }
    let relay_platform = platform.clone();
    let wake = triggers::objects::start_relay(
        objects_store.clone(),
        scope.region.clone(),
        Arc::new(move |account| {
            let p = relay_platform.clone();
            Box::pin(async move { p.invoker(&account).await })
        }),
    );
    let keys = objects::Keys::new(platform.authenticator());
    let object_api = objects::Objects::new(
        objects_store,
        keys.clone(),
        objects::ObjectsConfig {
            region: scope.region.clone(),
            max_object_size: args.max_object_size,
            enforced: auth_mode == api::auth::AuthMode::Enforced,
            default_account: scope.account.clone(),
        },
        Arc::new(move || wake.notify_one()),
    );
    let app = platform.clone().app();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let http_server = tokio::spawn(triggers::http::serve(http_listener, front, stopped()));
    let s3_server = tokio::spawn(objects::serve(
        s3_listener,
        objects::service(object_api, keys, auth_mode == api::auth::AuthMode::Enforced),
        stopped(),
    ));
    tracing::info!(data_dir = %data_dir.display(), cluster = node.is_some(), "Stratus is ready");
    // Tests and scripts read the bound addresses from these lines. Written at once, and a
    // reader that stopped listening is no reason to fail.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(
            format!(
                "Stratus listening on http://{addr}\nStratus HTTP front (function URLs, HTTP routes) on http://{http_addr}\nStratus S3 API on http://{s3_addr}\n{}",
                match &node {
                    Some(n) => format!("Stratus cluster node {} (incarnation {})\n", invoke::cluster::Cluster::node_id(n), n.incarnation()),
                    None => String::new(),
                }
            )
            .as_bytes(),
        );
        let _ = out.flush();
    }
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let drain = (node.clone(), platform.clone(), Duration::from_secs(args.drain_secs));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            if let (Some(n), p, limit) = &drain {
                drain_node(n, p, *limit).await;
            }
            let _ = stop_tx.send(true);
        })
        .await?;
    let _ = http_server.await;
    let _ = s3_server.await;
    tracing::info!("shutting down: stopping execution environments");
    platform.shutdown().await;
    if let Some(n) = &node {
        n.leave().await;
        tracing::info!("left the cluster");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// Drains a cluster node before it stops: it leaves placement (new invocations go to the
/// others, who also take over its mappings and schedules), its pollers stop after their batch
/// and give their leases up, and the invocations it runs finish (up to `limit`). The API keeps
/// answering meanwhile.
async fn drain_node(node: &cluster::Node, platform: &api::platform::Platform, limit: Duration) {
    tracing::info!("draining: new invocations go to the other nodes");
    node.drain().await;
    platform.stop_pollers();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let running: usize = platform.invokers().iter().map(|i| i.in_flight()).sum();
        if running == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(running, "draining: invocations still running at the deadline are cut short");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!("drained");
}

/// What every account's API is built from.
struct Shared {
    config: invoke::InvokerConfig,
    /// The default account's store (its ledger serves every account).
    store: store::Store,
    catalogue: runtimes::Catalogue,
    backend: Arc<dyn sandbox::Backend>,
    log_limits: store::LogLimits,
    prices: Arc<model::pricing::PriceBook>,
    /// Signs code download URLs.
    accounts: store::accounts::Accounts,
    http_port: u16,
    /// The API and the object API as functions reach them.
    api_url: String,
    s3_url: String,
    url_domain: String,
    http_max_body: usize,
    schedule_seconds: bool,
    /// The cluster's shared stores (cluster mode only).
    cluster: Option<store::ClusterStores>,
    /// This node of the cluster (cluster mode only).
    node: Option<cluster::Node>,
}

impl Shared {
    /// Starts one account's API: the default account lives in the data directory itself,
    /// every other in `accounts/<id>/` with its own database, code, logs and environments.
    fn tenant(&self, account: &str) -> anyhow::Result<api::ApiState> {
        let default = account == self.config.scope.account;
        let scope = Scope { region: self.config.scope.region.clone(), account: account.to_string() };
        let mut config = self.config.clone();
        config.scope = scope.clone();
        let (key_id, secret) = self
            .accounts
            .function_key(account)
            .with_context(|| format!("cannot make the function credentials of account {account}"))?;
        config.service_env = Arc::new(vec![
            ("AWS_ENDPOINT_URL_S3".into(), self.s3_url.clone()),
            ("AWS_ENDPOINT_URL_LAMBDA".into(), self.api_url.clone()),
            ("AWS_ACCESS_KEY_ID".into(), key_id),
            ("AWS_SECRET_ACCESS_KEY".into(), secret),
        ]);
        let store = if default {
            self.store.clone()
        } else {
            let dir = self.store.root().join("accounts").join(account);
            let store = match &self.cluster {
                Some(c) => store::Store::open_cluster(&dir, self.log_limits, c, account),
                None => store::Store::open_with_ledger(&dir, self.log_limits, self.store.ledger.clone()),
            }
            .with_context(|| format!("cannot open {}", dir.display()))?;
            if let Err(e) = store.collect_garbage() {
                tracing::warn!(account, error = %e, "cannot collect unreferenced code packages");
            }
            config.envs_dir = dir.join("envs");
            store
        };
        let invoker = invoke::Invoker::start(config, store.clone(), self.catalogue.clone(), self.backend.clone());
        let front = triggers::http::Front::new(
            invoker.clone(),
            store.clone(),
            triggers::http::HttpConfig {
                scope: scope.clone(),
                port: self.http_port,
                domain: self.url_domain.clone(),
                max_body: self.http_max_body,
            },
        );
        let scheduler = triggers::schedules::Scheduler::start(invoker.clone(), store.clone(), self.schedule_seconds);
        let pollers = triggers::esm::Pollers::start(invoker.clone(), store.clone());
        Ok(api::ApiState {
            scheduler,
            pollers,
            store,
            invoker,
            scope,
            http: front,
            prices: self.prices.clone(),
            operator: default,
            accounts: Some(self.accounts.clone()),
            cluster: self.node.clone(),
        })
    }
}

/// The address a local client uses for a listener (an unspecified address means this host).
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() { SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()) } else { addr }
}

/// The authentication mode: asked for, or chosen by the address listened on.
fn auth_mode(args: &ServeArgs) -> anyhow::Result<api::auth::AuthMode> {
    use api::auth::AuthMode;
    // Both signed listeners decide: the API and the object API.
    let exposed = [args.listen, args.s3_listen].into_iter().find(|a| !a.ip().is_loopback());
    let loopback = exposed.is_none();
    match args.auth {
        Some(AuthArg::Enforced) => Ok(AuthMode::Enforced),
        Some(AuthArg::Development) if !loopback => anyhow::bail!(
            "--auth development is only allowed when listening on loopback (not {}): anyone who can reach the API could act as the default account",
            exposed.map(|a| a.to_string()).unwrap_or_default()
        ),
        Some(AuthArg::Development) => Ok(AuthMode::Development),
        None if loopback => Ok(AuthMode::Development),
        None => Ok(AuthMode::Enforced),
    }
}

/// Installs the Prometheus recorder behind the `metrics` facade; returns what renders it.
fn install_metrics() -> anyhow::Result<Arc<dyn Fn() -> String + Send + Sync>> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_milliseconds".into()), invoke::meter::DURATION_BUCKETS)?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    for (name, help) in
        invoke::meter::DESCRIPTIONS.iter().chain(triggers::schedules::DESCRIPTIONS).chain(triggers::esm::DESCRIPTIONS)
    {
        if name.ends_with("_total") {
            metrics::describe_counter!(*name, *help);
        } else if name.ends_with("_milliseconds") {
            metrics::describe_histogram!(*name, metrics::Unit::Milliseconds, *help);
        } else if name.ends_with("_seconds") {
            metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
        } else {
            metrics::describe_gauge!(*name, *help);
        }
    }
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(Arc::new(move || handle.render()))
}

/// The isolating backend, or (only when asked for) the unisolated one.
fn choose_backend(args: &ServeArgs, data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn sandbox::Backend>> {
    if args.unisolated {
        tracing::warn!(
            "--unisolated: execution environments are NOT isolated; functions run as plain processes with the server's privileges. Development only: never run code you do not trust this way."
        );
        return Ok(Arc::new(sandbox::ProcessBackend));
    }
    let exe =
        std::env::current_exe().context("cannot find the stratus executable (it becomes each environment's init)")?;
    let mut config = sandbox::NamespaceConfig::new(exe, data_dir.join("sandbox-root"));
    config.user_namespace = !args.no_user_namespace;
    match sandbox::NamespaceBackend::new(config) {
        Ok(b) => {
            tracing::info!(cgroups = ?b.cgroup_version(), "execution environments are isolated (namespaces, cgroups, seccomp)");
            if let Some(why) = b.no_user_namespace() {
                tracing::warn!(
                    "execution environments run without a user namespace ({why}); each still runs as its own unprivileged uid"
                );
            }
            Ok(Arc::new(b))
        }
        Err(e) => {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason.push_str(&format!(": {s}"));
                source = s.source();
            }
            anyhow::bail!(
                "cannot isolate functions on this host ({reason}).\n\
                 Run `stratus serve` as root on Linux with cgroups, or pass --unisolated to run functions \
                 as plain, unconfined processes (development only)."
            )
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STRATUS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
