//! The command line: `serve`, `send`, `status`, `check-config`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogConfig, LogFormat};
use crate::daemon::{self, Daemon};
use crate::outbox::{ChannelName, Enqueued, FallbackTarget, NotificationId, Priority};
use crate::registry::Registry;
use crate::submission::{EscalateRequest, Submission};

/// notifyd: delivers notifications over many channels and never loses one.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    /// Configuration file (TOML). Without it, the built-in defaults (see config/notifyd.toml).
    #[arg(long, global = true, env = "NOTIFYD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: HTTP API and dispatcher.
    Serve,
    /// Put one notification straight into the queue file (no daemon needed; a running daemon
    /// picks it up). Prints {"id","state"}. The queue must exist (`serve` creates it).
    Send(Box<SendArgs>),
    /// Show a notification's state and attempts, read from the queue file (which must exist).
    Status {
        /// The notification id.
        id: NotificationId,
    },
    /// Validate the configuration (and build every channel) without starting.
    CheckConfig,
    /// List dead letters, newest first, read from the queue file.
    DeadLetters {
        #[arg(long)]
        channel: Option<ChannelName>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Search the history, newest first, read from the queue file: a table, or `--json` (the
    /// API's page). Pass the printed `next` as `--cursor` for the following page.
    List(Box<crate::search::ListArgs>),
    /// Put dead letters back in the queue (with a fresh attempt budget): one by id, or all of a
    /// channel. Works on the queue file; a running daemon picks them up.
    Replay {
        /// The notification id.
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<NotificationId>,
        /// Every dead letter of --channel.
        #[arg(long, requires = "channel")]
        all_dead: bool,
        #[arg(long)]
        channel: Option<ChannelName>,
    },
    /// Show the running daemon's channels: breaker, rate limit, queue depth, last error.
    Channels,
    /// A recipient's preferences (time zone, quiet hours, muted and opted-out channels), in the
    /// queue (which must exist).
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// Measure throughput and latency on this machine (see README).
    Bench(crate::bench::BenchArgs),
    /// Measure history searches on a large queue (see README).
    BenchHistory(Box<crate::bench_history::Args>),
}

/// `notifyd send` flags; the same fields as the HTTP API.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    #[arg(long)]
    pub channel: String,
    #[arg(long)]
    pub to: String,
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub body: Option<String>,
    #[arg(long)]
    pub html: Option<String>,
    /// JSON value passed to the channel (e.g. Slack blocks, push data).
    #[arg(long)]
    pub data: Option<String>,
    /// high, normal or low.
    #[arg(long)]
    pub priority: Option<String>,
    /// RFC 3339 time before which it is not sent.
    #[arg(long)]
    pub send_at: Option<String>,
    /// RFC 3339 time after which it is never sent.
    #[arg(long)]
    pub expires_at: Option<String>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Not sent again while another notification with this key to the same channel and
    /// recipient is within its dedup window.
    #[arg(long)]
    pub dedup_key: Option<String>,
    /// How long the dedup key holds (`10m`); the channel's `dedup_window` when absent.
    #[arg(long)]
    pub dedup_window: Option<String>,
    /// Collected into one digest with the others to the same recipient with this key (on a
    /// channel with a `digest_window`).
    #[arg(long)]
    pub digest_key: Option<String>,
    /// A template name (see `[templates]`), instead of subject/body/html/data.
    #[arg(long)]
    pub template: Option<String>,
    /// Template variables as a JSON object.
    #[arg(long)]
    pub vars: Option<String>,
    /// A fallback route CHANNEL=TO, tried if this one fails; repeat for more.
    #[arg(long)]
    pub fallback: Vec<String>,
    /// Local hours it may be sent in, START-END (`09:00-17:00`).
    #[arg(long, value_name = "START-END")]
    pub deliver_between: Option<String>,
    /// The IANA zone of --deliver-between (default: the recipient's, else the channel's).
    #[arg(long, requires = "deliver_between")]
    pub deliver_between_zone: Option<String>,
    /// An escalation step AFTER:CHANNEL=TO (e.g. `5m:sms=+33612345678`), sent if nobody
    /// acknowledges within AFTER of the previous delivery; repeat for more.
    #[arg(long)]
    pub escalate: Vec<String>,
}

/// `notifyd recipients …`: a recipient's preferences, as `/v1/recipients/{address}` has them.
#[derive(Debug, Subcommand)]
pub(crate) enum RecipientsCommand {
    /// Store a recipient's preferences, replacing any (like `PUT`). Prints them as stored.
    Set(Box<SetPreferencesArgs>),
    /// Print a recipient's preferences (exit 1 when it has none).
    Get { address: String },
    /// Forget a recipient's preferences (exit 1 when it had none).
    Delete { address: String },
}

/// `notifyd recipients set` flags: the fields of the API's JSON body.
#[derive(Debug, clap::Args)]
pub(crate) struct SetPreferencesArgs {
    pub address: String,
    /// IANA time zone (`Europe/Paris`).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Local hours nothing is sent, START-END (`22:00-07:00`).
    #[arg(long, value_name = "START-END")]
    pub quiet_hours: Option<String>,
    /// A channel to mute; repeat for more.
    #[arg(long)]
    pub muted: Vec<String>,
    /// A channel the recipient opted out of; repeat for more.
    #[arg(long)]
    pub opted_out: Vec<String>,
    /// Whether high priority passes quiet hours, mutes and opt-outs.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub high_priority_passes: bool,
}

/// Exit code for input the command refuses.
const EXIT_INVALID: u8 = 2;
/// Exit code for an idempotency conflict.
const EXIT_CONFLICT: u8 = 3;

/// Runs the command line; never panics on bad input.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("notifyd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("notifyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the configuration came from, for messages that name one of its keys.
fn origin(path: Option<&std::path::Path>) -> String {
    match path {
        Some(p) => format!("in {}", p.display()),
        None => "in the built-in defaults and NOTIFYD_* environment".into(),
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("notifyd: {e}");
        ExitCode::from(EXIT_INVALID)
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Bench(args) = &cli.command {
        return crate::bench::run(args).await.map(|()| ExitCode::SUCCESS);
    }
    if let Command::BenchHistory(args) = &cli.command {
        return crate::bench_history::run(args)
            .await
            .map(|()| ExitCode::SUCCESS);
    }
    let config = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match cli.command {
        Command::Serve => {
            init_logging(&config.log);
            serve(config, cli.config.clone()).await
        }
        Command::CheckConfig => match Registry::build(&config) {
            Ok(registry) => {
                let templates = match daemon::load_templates(&config) {
                    Ok(t) => t.names(),
                    Err(e) => {
                        eprintln!("notifyd: {e}");
                        return Ok(ExitCode::from(EXIT_INVALID));
                    }
                };
                let names = registry.names();
                print!(
                    "configuration OK: {} channel(s): {}",
                    names.len(),
                    names.join(", ")
                );
                if templates.is_empty() {
                    println!();
                } else {
                    println!(
                        "; {} template(s): {}",
                        templates.len(),
                        templates.join(", ")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(problems) => {
                eprintln!(
                    "notifyd: channels ({}):\n  {}",
                    origin(cli.config.as_deref()),
                    problems.join("\n  ")
                );
                Ok(ExitCode::from(EXIT_INVALID))
            }
        },
        Command::Send(args) => send(config, cli.config.as_deref(), *args).await,
        Command::Status { id } => {
            let outbox = daemon::open_existing_outbox(&config).await?;
            match outbox.get(&id).await? {
                Some(view) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&crate::api::views_notification(&view))?
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("notifyd: no notification with id {id:?}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Bench(_) | Command::BenchHistory(_) => Ok(ExitCode::SUCCESS),
        Command::DeadLetters { channel, limit } => {
            let outbox = daemon::open_existing_outbox(&config).await?;
            let items = outbox
                .dead_letters(channel.as_ref(), limit.clamp(1, 10_000))
                .await?;
            let items: Vec<_> = items.iter().map(crate::api::views_dead_letter).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "dead_letters": items }))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            id,
            all_dead,
            channel,
        } => replay(&config, id, all_dead, channel).await,
        Command::Channels => channels(&config).await,
        Command::Recipients(command) => recipients(&config, command).await,
        Command::List(args) => {
            let query = match crate::search::parse(args.pairs()) {
                Ok(q) => q,
                Err(r) => {
                    eprintln!("notifyd: --{}: {}", r.field.replace('_', "-"), r.message);
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let outbox = daemon::open_existing_outbox(&config).await?;
            let page = outbox.history(&query).await?;
            if args.json {
                let body = crate::api::HistoryPageBody::from(&page);
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!("{}", crate::search::table(&page));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let daemon = Daemon::start(config)
        .await
        .with_context(|| format!("configuration {}", origin(path.as_deref())))?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match Config::load(path.as_deref()).map_err(|e| e.to_string()).and_then(|c| daemon.reload(c)) {
                Ok(r) if r.needs_restart.is_empty() => {}
                Ok(r) => tracing::warn!(settings = ?r.needs_restart, "These settings changed but need a restart; their old values stay in force."),
                Err(e) => tracing::error!(error = %e, config = %origin(path.as_deref()), "Reload refused; the running configuration stays in force."),
            },
        }
    }
    tracing::info!("Shutdown requested.");
    daemon.stop();
    daemon.wait().await;
    tracing::info!("notifyd stopped.");
    Ok(ExitCode::SUCCESS)
}

async fn replay(
    config: &Config,
    id: Option<NotificationId>,
    all: bool,
    channel: Option<ChannelName>,
) -> anyhow::Result<ExitCode> {
    use crate::outbox::Transition;
    let outbox = daemon::open_existing_outbox(config).await?;
    let ids: Vec<NotificationId> = match (id, all, channel) {
        (Some(id), _, _) => vec![id],
        (None, true, Some(channel)) => {
            let replayed = outbox.replay_channel(&channel).await?;
            println!(
                "{}",
                serde_json::json!({ "replayed": replayed, "channel": channel })
            );
            return Ok(ExitCode::SUCCESS);
        }
        _ => {
            eprintln!("notifyd: give a notification id, or --all-dead --channel C");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    for id in ids {
        match outbox.replay(&id).await? {
            Transition::Done(state) => {
                println!("{}", serde_json::json!({"id": id, "state": state}))
            }
            Transition::NotFound => {
                eprintln!("notifyd: no notification with id {id:?}");
                return Ok(ExitCode::FAILURE);
            }
            Transition::Refused(state) => {
                eprintln!("notifyd: {id} is {state}, not dead: nothing to replay");
                return Ok(ExitCode::from(EXIT_CONFLICT));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn channels(config: &Config) -> anyhow::Result<ExitCode> {
    let endpoint =
        crate::listener::Endpoint::parse(&config.server.listen).map_err(anyhow::Error::msg)?;
    let crate::listener::Endpoint::Tcp(addr) = endpoint else {
        anyhow::bail!(
            "`notifyd channels` talks HTTP over TCP; with a Unix socket use curl --unix-socket"
        );
    };
    let mut req = reqwest::Client::new().get(format!("http://{addr}/v1/channels"));
    if let Some(token) = config.server.tokens().first() {
        req = req.bearer_auth(token);
    }
    let resp = req
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("no daemon answering on {addr}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .context("the daemon's answer was not JSON")?;
    if !status.is_success() {
        anyhow::bail!("the daemon answered {status}: {body}");
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(ExitCode::SUCCESS)
}

async fn send(
    config: Config,
    path: Option<&std::path::Path>,
    args: SendArgs,
) -> anyhow::Result<ExitCode> {
    let registry = match Registry::build(&config) {
        Ok(r) => r,
        Err(problems) => {
            eprintln!(
                "notifyd: channels ({}):\n  {}",
                origin(path),
                problems.join("\n  ")
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let submission = match submission_from(args) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("notifyd: {msg}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let templates = match daemon::load_templates(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("notifyd: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let replay = submission.replay();
    let new = match submission.validate(&registry, &templates) {
        Ok(n) => n,
        Err(r) => {
            // A replay of a stored notification is answered as its first send was.
            if let Some(replay) = replay
                && let Ok(outbox) = daemon::open_existing_outbox(&config).await
                && let Ok(Some(holder)) = outbox.find_key(&replay.key).await
                && let Enqueued::Duplicate { id, state } = holder.answer(&replay.content_hash)
            {
                println!("{}", serde_json::json!({"id": id, "state": state}));
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "notifyd: --{}: {} ({})",
                r.field.replace('_', "-"),
                r.message,
                r.code
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let outbox = daemon::open_existing_outbox(&config).await?;
    let result = outbox.enqueue(vec![new]).await?;
    match result.first() {
        Some(Enqueued::Created { id }) => {
            println!("{}", serde_json::json!({"id": id, "state": "queued"}));
            Ok(ExitCode::SUCCESS)
        }
        Some(Enqueued::Duplicate { id, state }) => {
            println!("{}", serde_json::json!({"id": id, "state": state}));
            Ok(ExitCode::SUCCESS)
        }
        Some(Enqueued::Deduplicated { id, state }) => {
            println!(
                "{}",
                serde_json::json!({"id": id, "state": state, "duplicate_of": id})
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Enqueued::Conflict { id }) => {
            eprintln!(
                "notifyd: --idempotency-key was already used for a different notification ({id})"
            );
            Ok(ExitCode::from(EXIT_CONFLICT))
        }
        None => anyhow::bail!("the queue returned no result"),
    }
}

/// The JSON of flag `--name`: valid, and with every integer kept exactly.
fn json_flag(name: &str, text: Option<String>) -> Result<Option<serde_json::Value>, String> {
    let Some(text) = text else { return Ok(None) };
    let value =
        serde_json::from_str(&text).map_err(|e| format!("--{name}: not valid JSON: {e}"))?;
    if let Some(path) = crate::json_bounds::inexact_integers(text.as_bytes()).first() {
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" at {path}")
        };
        return Err(format!(
            "--{name}: the integer{at} is outside the signed 64-bit range and would not be kept \
             exactly; give it as a string"
        ));
    }
    Ok(Some(value))
}

fn submission_from(args: SendArgs) -> Result<Submission, String> {
    let data = json_flag("data", args.data)?;
    let vars = json_flag("vars", args.vars)?;
    let priority = match args.priority {
        Some(p) => Some(
            p.parse::<Priority>()
                .map_err(|e| format!("--priority: {e} (use high, normal or low)"))?,
        ),
        None => None,
    };
    let fallback = args
        .fallback
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(channel, to)| FallbackTarget {
                    channel: channel.into(),
                    to: to.to_owned(),
                })
                .ok_or_else(|| format!("--fallback {f:?}: write CHANNEL=TO"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let escalate = args
        .escalate
        .iter()
        .map(|e| {
            e.split_once(':')
                .and_then(|(after, target)| Some((after, target.split_once('=')?)))
                .map(|(after, (channel, to))| EscalateRequest {
                    after: after.to_owned(),
                    channel: channel.into(),
                    to: to.to_owned(),
                })
                .ok_or_else(|| format!("--escalate {e:?}: write AFTER:CHANNEL=TO"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Submission {
        channel: args.channel.into(),
        to: args.to,
        subject: args.subject,
        body: args.body,
        html: args.html,
        data,
        template: args.template,
        vars,
        priority,
        send_at: args.send_at,
        expires_at: args.expires_at,
        idempotency_key: args.idempotency_key,
        fallback,
        deliver_between: match args.deliver_between {
            Some(window) => {
                let (start, end) = start_end("--deliver-between", &window)?;
                Some(crate::outbox::DeliverBetween {
                    start,
                    end,
                    time_zone: args.deliver_between_zone,
                })
            }
            None => None,
        },
        dedup_key: args.dedup_key,
        dedup_window: args.dedup_window,
        digest_key: args.digest_key,
        escalate,
    })
}

/// `START-END` (`22:00-07:00`) split in two; the times are checked by the rule's validation.
fn start_end(flag: &str, text: &str) -> Result<(String, String), String> {
    text.split_once('-')
        .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
        .ok_or_else(|| format!("{flag} {text:?}: write START-END, such as 22:00-07:00"))
}

/// `notifyd recipients set|get|delete`, on the queue (which must exist).
async fn recipients(config: &Config, command: RecipientsCommand) -> anyhow::Result<ExitCode> {
    let raw = match &command {
        RecipientsCommand::Set(args) => &args.address,
        RecipientsCommand::Get { address } | RecipientsCommand::Delete { address } => address,
    };
    let address = match crate::recipients::address(raw) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("notifyd: ADDRESS: {} ({})", e.message, e.code);
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    match command {
        RecipientsCommand::Set(args) => {
            let registry = match Registry::build(config) {
                Ok(r) => r,
                Err(problems) => {
                    eprintln!("notifyd: channels:\n  {}", problems.join("\n  "));
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let quiet_hours = match args
                .quiet_hours
                .as_deref()
                .map(|t| start_end("--quiet-hours", t))
            {
                Some(Ok((start, end))) => Some(crate::window::WindowSpec { start, end }),
                Some(Err(msg)) => {
                    eprintln!("notifyd: {msg}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
                None => None,
            };
            let prefs = crate::recipients::Preferences {
                time_zone: args.time_zone,
                quiet_hours,
                muted: args.muted,
                opted_out: args.opted_out,
                high_priority_passes: args.high_priority_passes,
            };
            let prefs = match prefs.validate(|c| registry.get(&ChannelName::from(c)).is_some()) {
                Ok(p) => p,
                Err(e) => {
                    let flag = e
                        .field
                        .split(['.', '['])
                        .next()
                        .unwrap_or("")
                        .replace('_', "-");
                    eprintln!("notifyd: --{flag}: {} ({})", e.message, e.code);
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let outbox = daemon::open_existing_outbox(config).await?;
            outbox.put_preferences(&address, &prefs).await?;
            println!("{}", serde_json::to_string_pretty(&prefs)?);
            Ok(ExitCode::SUCCESS)
        }
        RecipientsCommand::Get { .. } => {
            let outbox = daemon::open_existing_outbox(config).await?;
            match outbox
                .preferences(std::slice::from_ref(&address))
                .await?
                .pop()
            {
                Some((_, prefs)) => {
                    println!("{}", serde_json::to_string_pretty(&prefs)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("notifyd: no preferences stored for {address:?}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        RecipientsCommand::Delete { .. } => {
            let outbox = daemon::open_existing_outbox(config).await?;
            if outbox.delete_preferences(&address).await? {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("notifyd: no preferences stored for {address:?}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// Sets up logging: human lines or JSON, filtered by `log.level` unless `RUST_LOG` is set.
pub(crate) fn init_logging(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
