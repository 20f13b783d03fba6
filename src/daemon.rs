//! The running daemon: queue, channels, dispatcher and API wired together, with an orderly stop.

use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ack_link::AckLinks;
use crate::api::{self, AppState, Live};
use crate::config::{Config, QueueLocation};
use crate::dispatch::{Dispatcher, Halt};
use crate::listener::{self, Bound, Endpoint};
use crate::outbox::postgres::{PgOptions, PgOutbox};
use crate::outbox::sqlite::{SqliteOptions, SqliteOutbox};
use crate::outbox::{Clock, Outbox, StoreError};
use crate::registry::Registry;
use crate::systemd::Notifier;
use crate::templates::Templates;

/// The daemon (or a CLI command) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The queue file could not be opened or migrated. The store's error is part of the message,
    /// not a `source`, so `{:#}` prints it once.
    #[error("queue.url {url:?}: {error}")]
    Queue { url: String, error: StoreError },
    /// `queue.url` names no usable file.
    #[error("queue.url: {0}")]
    QueueUrl(String),
    /// A command that works on an existing queue found no queue file there.
    #[error(
        "no queue at {} (queue.url = {url:?}): this command never creates one. Point queue.url \
         (in the file given with --config, or NOTIFYD_QUEUE__URL) at the queue `notifyd serve` \
         uses, e.g. sqlite:///var/lib/notifyd/notifyd.db on a service host",
        .path.display()
    )]
    NoQueue {
        path: std::path::PathBuf,
        url: String,
    },
    /// One or more channels could not be built; each problem names its key.
    #[error("channels:\n  {}", .0.join("\n  "))]
    Channels(Vec<String>),
    /// A template did not compile.
    #[error("{0}")]
    Templates(#[from] crate::templates::TemplateError),
    /// ntfy's listener (`ingest.ntfy.listen`) could not be bound.
    #[error("ingest.ntfy.listen: cannot listen on {addr}: {source}")]
    NtfyBind {
        addr: String,
        source: std::io::Error,
    },
    /// The listener could not be bound (or may not be served as configured).
    #[error("server.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Opens the queue named by the config, creating and migrating it if needed (`serve`), the
/// store reading its time from `clock` (a manual one in tests, to move the queue's timers: due
/// times, escalation waits, leases). A PostgreSQL queue is opened even while its server is
/// unreachable: the daemon starts, answers 503 and says why on `/readyz`, and connects and
/// migrates as soon as it can.
async fn open_outbox_on(config: &Config, clock: Clock) -> Result<Arc<dyn Outbox>, StartError> {
    match config.queue.location().map_err(StartError::QueueUrl)? {
        QueueLocation::Sqlite(path) => open_at(config, path, clock).await,
        QueueLocation::Postgres(url) => open_postgres(config, url, clock, Reach::Later).await,
    }
}

/// Opens an existing queue (the CLI's `send`, `status`, `dead-letters`, `replay`): a missing
/// file is an error naming the path, never a fresh empty queue that nobody serves, which would
/// silently show nothing or swallow what is sent. (A PostgreSQL queue is shared: the database
/// is there or the command fails to connect; the schema is created on first use.)
pub(crate) async fn open_existing_outbox(config: &Config) -> Result<Arc<dyn Outbox>, StartError> {
    let path = match config.queue.location().map_err(StartError::QueueUrl)? {
        QueueLocation::Sqlite(path) => path,
        QueueLocation::Postgres(url) => {
            return open_postgres(config, url, Clock::System, Reach::Now).await;
        }
    };
    if !path.is_file() {
        return Err(StartError::NoQueue {
            path,
            url: config.queue.url.clone(),
        });
    }
    open_at(config, path, Clock::System).await
}

/// When a PostgreSQL queue must be reachable.
enum Reach {
    /// Now, or the command fails (the CLI: its caller is waiting).
    Now,
    /// As soon as it can be (the daemon: [`PgOutbox::start`]).
    Later,
}

async fn open_postgres(
    config: &Config,
    url: String,
    clock: Clock,
    reach: Reach,
) -> Result<Arc<dyn Outbox>, StartError> {
    let opts = PgOptions {
        schema: config.queue.schema.clone(),
        max_connections: config.queue.max_connections,
        pgbouncer: config.queue.pgbouncer,
        vacuum: config.queue.vacuum,
        clock,
        ..PgOptions::new(url)
    };
    let opened = match reach {
        Reach::Now => PgOutbox::connect(&opts).await,
        Reach::Later => PgOutbox::start(&opts).await,
    };
    let outbox = opened.map_err(|error| StartError::Queue {
        url: redacted_url(&config.queue.url),
        error,
    })?;
    Ok(Arc::new(outbox))
}

/// A queue URL as an error may show it: without a password.
fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn open_at(
    config: &Config,
    path: std::path::PathBuf,
    clock: Clock,
) -> Result<Arc<dyn Outbox>, StartError> {
    let queue_error = |error| StartError::Queue {
        url: config.queue.url.clone(),
        error,
    };
    let opts = SqliteOptions {
        min_free_bytes: config.queue.min_free_bytes,
        clock,
        ..SqliteOptions::new(path)
    };
    let outbox = tokio::task::spawn_blocking(move || SqliteOutbox::open(&opts))
        .await
        .map_err(|e| queue_error(StoreError::Internal(e.to_string())))?
        .map_err(queue_error)?;
    Ok(Arc::new(outbox))
}

/// The rule `validate` applies to `server.listen`, applied to the endpoint actually bound (which
/// a reload cannot change, and which systemd may have chosen): one reachable from other hosts
/// needs a token.
fn open_to_others(addr: &Endpoint, server: &crate::config::ServerConfig) -> Option<String> {
    (!addr.is_local() && server.tokens().is_empty())
        .then(|| format!("{addr} is reachable from other hosts and no server.auth_token is set"))
}

/// Loads the configured templates (none when `templates.dir` is not set).
/// With `[links]` configured, escalating notifications render `{{ ack_url }}`.
pub(crate) fn load_templates(
    config: &Config,
) -> Result<Templates, crate::templates::TemplateError> {
    let templates = match &config.templates.dir {
        Some(dir) => Templates::load(dir)?,
        None => Templates::default(),
    };
    let links = match (&config.links.base_url, config.links.key()) {
        (Some(base_url), Some(key)) => Some(AckLinks::new(key, base_url)),
        _ => None,
    };
    templates.with_ack_links(links)
}

/// A started daemon.
pub struct Daemon {
    addr: Endpoint,
    /// Where ntfy's publish API listens (`ingest.ntfy.listen`), if it does.
    ntfy_addr: Option<Endpoint>,
    ntfy: Option<JoinHandle<()>>,
    outbox: Arc<dyn Outbox>,
    live: Arc<RwLock<Live>>,
    notifier: Notifier,
    config: Mutex<Config>,
    api_stop: watch::Sender<bool>,
    api: JoinHandle<()>,
    /// The dispatcher delivering now, and the ones retired by reloads that are still finishing.
    dispatcher: Mutex<(watch::Sender<Halt>, Vec<JoinHandle<()>>)>,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub channels: Vec<crate::outbox::ChannelName>,
    /// Settings that only a restart applies; their old values stay in force.
    pub needs_restart: Vec<&'static str>,
}

fn start_dispatcher(
    outbox: &Arc<dyn Outbox>,
    registry: Arc<Registry>,
    templates: Arc<Templates>,
    config: &Config,
    notifier: &Notifier,
) -> (watch::Sender<Halt>, JoinHandle<()>) {
    let (halt, halted) = watch::channel(Halt::Running);
    let dispatcher = Dispatcher::new(
        outbox.clone(),
        registry,
        config.dispatcher.clone(),
        config.retention.to_retention(),
        notifier.clone(),
    )
    .with_templates(templates);
    (halt, tokio::spawn(dispatcher.run(halted)))
}

impl Daemon {
    /// Opens the queue, builds the channels, binds the listener and starts serving. Returns once
    /// the API is listening (so a caller may report readiness).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_on(config, Clock::System).await
    }

    /// [`Daemon::start`] with the queue reading its time from `clock`: tests move a manual one
    /// to make the queue's timers (due times, escalation waits) come due without waiting.
    pub async fn start_on(config: Config, clock: Clock) -> Result<Self, StartError> {
        let outbox: Arc<dyn Outbox> = open_outbox_on(&config, clock).await?;
        let registry = Arc::new(
            Registry::build_sharing(&config, outbox.cluster_limits())
                .map_err(StartError::Channels)?,
        );
        let templates = Arc::new(load_templates(&config)?);
        let bind_error = |source| StartError::Bind {
            addr: config.server.listen.clone(),
            source,
        };
        let bound = match Bound::from_systemd().map_err(bind_error)? {
            Some(bound) => bound,
            None => {
                let endpoint = Endpoint::parse(&config.server.listen).map_err(|e| {
                    bind_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
                Bound::bind(&endpoint).await.map_err(bind_error)?
            }
        };
        let addr = bound.endpoint().map_err(bind_error)?;
        // A socket systemd passed was not checked by config validation: apply the same rule.
        if let Some(why) = open_to_others(&addr, &config.server) {
            return Err(bind_error(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                why,
            )));
        }
        let live = Arc::new(RwLock::new(Live {
            registry: registry.clone(),
            templates: templates.clone(),
            server: Arc::new(config.server.clone()),
            ingest: Arc::new(config.ingest.clone()),
        }));
        // Work another daemon queued on a shared queue wakes the channel's loop (a hint).
        let woken = live.clone();
        outbox.wake_on_remote_work(Arc::new(move |channel| {
            if let Ok(live) = woken.read() {
                match channel {
                    Some(name) => live.registry.wake(name),
                    None => live.registry.iter().for_each(|rt| rt.wake.notify_one()),
                }
            }
        }));
        let state = AppState {
            outbox: outbox.clone(),
            live: live.clone(),
            counters: Default::default(),
        };
        let router = api::router(state.clone());
        let notifier = Notifier::from_env();
        let (api_stop, api_stopped) = watch::channel(false);
        let header_timeout = config.server.header_timeout;
        let ntfy = match &config.ingest.ntfy.listen {
            Some(listen) => {
                let ntfy_error = |source| StartError::NtfyBind {
                    addr: listen.clone(),
                    source,
                };
                let endpoint = Endpoint::parse(listen).map_err(|e| {
                    ntfy_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
                let bound = Bound::bind(&endpoint).await.map_err(ntfy_error)?;
                let at = bound.endpoint().map_err(ntfy_error)?;
                let router = crate::ingest::ntfy::router(state.clone());
                let task = tokio::spawn(listener::serve(
                    bound,
                    router,
                    header_timeout,
                    api_stop.subscribe(),
                ));
                Some((at, task))
            }
            None => None,
        };
        let api = tokio::spawn(listener::serve(bound, router, header_timeout, api_stopped));
        tracing::info!(listen = %addr, channels = ?registry.names(), "notifyd is ready.");
        // The listener is bound and a SQLite queue migrated: only now may systemd start
        // dependents. (A PostgreSQL queue may still be connecting: `/readyz` says so.)
        // Before the dispatcher starts, whose sweep pings the watchdog: READY comes first.
        notifier.ready(&format!("Listening on {addr}"));
        let (halt, dispatching) = start_dispatcher(
            &outbox,
            registry.clone(),
            templates.clone(),
            &config,
            &notifier,
        );
        let (ntfy_addr, ntfy) = ntfy.unzip();
        Ok(Self {
            addr,
            ntfy_addr,
            ntfy,
            outbox,
            live,
            notifier,
            config: Mutex::new(config),
            api_stop,
            api,
            dispatcher: Mutex::new((halt, vec![dispatching])),
        })
    }

    /// Where the API listens (the real port when port 0 was configured).
    pub fn addr(&self) -> &Endpoint {
        &self.addr
    }

    /// Where ntfy's publish API listens, when `ingest.ntfy.listen` is set.
    pub fn ntfy_addr(&self) -> Option<&Endpoint> {
        self.ntfy_addr.as_ref()
    }

    /// Applies a new configuration without losing anything queued or in flight: channels,
    /// policies, templates and API tokens change; a new dispatcher starts while the old one
    /// finishes its sends. An invalid configuration changes nothing, and neither does one that
    /// would leave the listener actually bound (a reload keeps it) reachable from other hosts
    /// without a token: the new file's `listen` is not what is served.
    pub fn reload(&self, new: Config) -> Result<Reloaded, String> {
        if let Some(why) = open_to_others(&self.addr, &new.server) {
            return Err(format!(
                "server.auth_token: {why} (a reload keeps the bound listener; a new \
                 server.listen applies only at a restart)"
            ));
        }
        if let Some(addr) = &self.ntfy_addr
            && let Some(why) = open_to_others(addr, &new.server)
        {
            return Err(format!(
                "server.auth_token: ingest.ntfy.listen: {why} (a reload keeps the bound listener)"
            ));
        }
        let registry = Arc::new(
            Registry::build_sharing(&new, self.outbox.cluster_limits())
                .map_err(|p| format!("channels:\n  {}", p.join("\n  ")))?,
        );
        let templates = Arc::new(load_templates(&new).map_err(|e| e.to_string())?);
        self.notifier
            .notify("RELOADING=1\nSTATUS=Reloading the configuration");
        let mut config = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let mut needs_restart = Vec::new();
        let mut server = new.server.clone();
        for (key, changed) in [
            ("server.listen", new.server.listen != config.server.listen),
            (
                "server.header_timeout",
                new.server.header_timeout != config.server.header_timeout,
            ),
            (
                "server.metrics_public",
                new.server.metrics_public != config.server.metrics_public,
            ),
            ("queue.url", new.queue.url != config.queue.url),
            (
                "ingest.ntfy.listen",
                new.ingest.ntfy.listen != config.ingest.ntfy.listen,
            ),
        ] {
            if changed {
                needs_restart.push(key);
            }
        }
        server.listen = config.server.listen.clone();
        server.header_timeout = config.server.header_timeout;
        server.metrics_public = config.server.metrics_public;
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            *live = Live {
                registry: registry.clone(),
                templates: templates.clone(),
                server: Arc::new(server),
                ingest: Arc::new(new.ingest.clone()),
            };
        }
        let mut running = self.dispatcher.lock().unwrap_or_else(|p| p.into_inner());
        let (halt, task) = start_dispatcher(
            &self.outbox,
            registry.clone(),
            templates.clone(),
            &new,
            &self.notifier,
        );
        let _ = running.0.send(Halt::Replaced);
        running.0 = halt;
        running.1.push(task);
        let queue_url = config.queue.url.clone();
        *config = new;
        config.queue.url = queue_url;
        self.notifier
            .notify("READY=1\nSTATUS=Configuration reloaded");
        tracing::info!(channels = ?registry.names(), needs_restart = ?needs_restart, "Configuration reloaded.");
        Ok(Reloaded {
            channels: registry.names(),
            needs_restart,
        })
    }

    /// Starts an orderly stop: no new requests, in-flight sends finish or are released.
    pub fn stop(&self) {
        let _ = self.api_stop.send(true);
        let running = self.dispatcher.lock().unwrap_or_else(|p| p.into_inner());
        let _ = running.0.send(Halt::Shutdown);
    }

    /// Waits until the stop has completed and every outcome is committed.
    pub async fn wait(self) {
        let _ = self.api.await;
        if let Some(ntfy) = self.ntfy {
            let _ = ntfy.await;
        }
        let tasks = {
            let mut running = self.dispatcher.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut running.1)
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod queue_url_tests {
    use super::redacted_url;

    #[test]
    fn a_queue_url_in_an_error_hides_its_password_only() {
        assert_eq!(
            redacted_url("postgres://notifyd:s3cret@db:5432/q"),
            "postgres://notifyd:***@db:5432/q"
        );
        assert_eq!(
            redacted_url("postgres://notifyd@db/q"),
            "postgres://notifyd@db/q"
        );
        assert_eq!(redacted_url("sqlite://notifyd.db"), "sqlite://notifyd.db");
    }
}
