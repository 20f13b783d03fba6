//! The running daemon: queue, channels, dispatcher and API wired together, with an orderly stop.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::server::{self, Bound, Endpoint};
use crate::api::{self, AppState};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::outbox::sqlite::{SqliteOptions, SqliteOutbox};
use crate::outbox::{Outbox, StoreError};
use crate::registry::Registry;
use crate::systemd::Notifier;
use crate::templates::Templates;

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("queue: {0}")]
    Queue(#[from] StoreError),
    #[error("queue.url: {0}")]
    QueueUrl(String),
    #[error("channels:\n  {}", .0.join("\n  "))]
    Channels(Vec<String>),
    #[error("{0}")]
    Templates(#[from] crate::templates::TemplateError),
    #[error("server.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Opens the queue named by the config.
pub async fn open_outbox(config: &Config) -> Result<Arc<SqliteOutbox>, StartError> {
    let path = config.queue.sqlite_path().map_err(StartError::QueueUrl)?;
    let opts = SqliteOptions::new(path);
    let outbox = tokio::task::spawn_blocking(move || SqliteOutbox::open(&opts))
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
    Ok(Arc::new(outbox))
}

/// Loads the configured templates (none when `templates.dir` is not set).
pub fn load_templates(config: &Config) -> Result<Templates, crate::templates::TemplateError> {
    match &config.templates.dir {
        Some(dir) => Templates::load(dir),
        None => Ok(Templates::default()),
    }
}

/// A started daemon.
pub struct Daemon {
    addr: Endpoint,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Daemon {
    /// Opens the queue, builds the channels, binds the listener and starts serving. Returns once
    /// the API is listening (so a caller may report readiness).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let outbox: Arc<dyn Outbox> = open_outbox(&config).await?;
        let registry = Arc::new(Registry::build(&config).map_err(StartError::Channels)?);
        let templates = Arc::new(load_templates(&config)?);
        let bind_error = |source| StartError::Bind {
            addr: config.server.listen.clone(),
            source,
        };
        let endpoint = Endpoint::parse(&config.server.listen)
            .map_err(|e| bind_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let bound = Bound::bind(&endpoint).await.map_err(bind_error)?;
        let addr = bound.endpoint().map_err(bind_error)?;
        let (shutdown, stop) = watch::channel(false);
        let router = api::router(AppState {
            outbox: outbox.clone(),
            registry: registry.clone(),
            templates,
            server: config.server.clone(),
            counters: Default::default(),
        });
        let notifier = Notifier::from_env();
        let dispatcher = Dispatcher::new(
            outbox.clone(),
            registry.clone(),
            config.dispatcher.clone(),
            config.retention.to_retention(),
            notifier.clone(),
        );
        let api_stop = stop.clone();
        let header_timeout = config.server.header_timeout;
        let task = tokio::spawn(async move {
            let dispatching = tokio::spawn(dispatcher.run(stop));
            server::serve(bound, router, header_timeout, api_stop).await;
            let _ = dispatching.await;
        });
        tracing::info!(listen = %addr, channels = ?registry.names(), "notifyd is ready.");
        // The queue is migrated and the listener bound: only now may systemd start dependents.
        notifier.ready(&format!("Listening on {addr}"));
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    /// Where the API listens (the real port when port 0 was configured).
    pub fn addr(&self) -> &Endpoint {
        &self.addr
    }

    /// Starts an orderly stop: no new requests, in-flight sends finish or are released.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the stop has completed and every outcome is committed.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
