//! `p2pmix client …`: a mixnet client on the command line (the [`Client`] handle).
//!
//! With `--json`, every line on stdout is one JSON object (`sent`, `resumed`, `delivered`,
//! `failed`, `unroutable`, `received`, `ready`, `done`), with times in milliseconds since the UNIX epoch, so that
//! scripts (the testnet) can measure what went through.
//!
//! The client's state lives in `DATA_DIR/client.redb`: every command started on a data
//! directory whose outbox holds unfinished messages (a command that was killed) resumes them
//! and reports their outcomes (`resumed`, then `delivered` or `failed`). A received message is
//! acknowledged once it is printed: a command killed before that prints it again next time,
//! never loses it.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::PeerId;
use p2pmix::{
    client::{
        Acknowledge, Address, CLIENT_STORE_FILE, Client, ClientConfig, Config, Event, MessageId,
        ReceivedMessage,
        gateway::{GATEWAY_FILE, gateway_for, remember_gateway, remembered_gateway},
    },
    config::{Authorities, TraceConfig},
    identity::{
        CLIENT_KEY_FILE, IDENTITY_FILE, NOISE_KEY_FILE, load_or_create_client_key,
        load_or_create_identity, load_or_create_static_key,
    },
    runtime::unix_ms,
};
use p2pmix_mix::trace::{TraceSink, Tracer};
use rand::RngExt;
use serde_json::json;

/// Where the client keeps its keys and which gateway it uses.
#[derive(clap::Args)]
pub(crate) struct ClientArgs {
    /// Identity, Noise key and the chosen gateway live here (created if missing).
    #[arg(long, env = "P2PMIX_CLIENT_DATA_DIR")]
    data_dir: PathBuf,
    /// The gateway, as a multiaddr ending in /p2p/PEER_ID (remembered in DATA_DIR/gateway).
    /// Without it and without a remembered one, a gateway is chosen uniformly among the
    /// consensus's (fetched from --authorities) and remembered.
    #[arg(long, env = "P2PMIX_CLIENT_GATEWAY")]
    gateway: Option<Multiaddr>,
    /// The pinned authorities file (with a [network] section).
    #[arg(long, env = "P2PMIX_CLIENT_AUTHORITIES")]
    authorities: Option<PathBuf>,
    /// Print one JSON object per line.
    #[arg(long, env = "P2PMIX_CLIENT_JSON")]
    json: bool,
    #[command(flatten)]
    trace: TraceArgs,
}

/// The client's test-network traces (refused unless the authorities file says
/// `test_network = true`).
#[derive(clap::Args)]
pub(crate) struct TraceArgs {
    /// Record what a global passive observer sees, one line per packet per link end (time,
    /// neighbour, packet tag), into FILE. Test networks only.
    #[arg(long, value_name = "FILE", env = "P2PMIX_CLIENT_TRACE_LINKS")]
    trace_links: Option<PathBuf>,
    /// Record the ground truth only this client knows (which message went in which packet)
    /// into FILE. Test networks only.
    #[arg(long, value_name = "FILE", env = "P2PMIX_CLIENT_TRACE_TRUTH")]
    trace_truth: Option<PathBuf>,
}

impl TraceArgs {
    fn config(&self) -> TraceConfig {
        TraceConfig {
            links: self.trace_links.clone(),
            truth: self.trace_truth.clone(),
            ..TraceConfig::default()
        }
    }
}

#[derive(clap::Subcommand)]
pub(crate) enum ClientCommand {
    /// Print this client's address (give it to those who should write to you). The gateway
    /// keeps messages for the address once the client has fetched from it once (`listen` or
    /// `send`); before that it refuses them.
    Address(ClientArgs),
    /// Receive messages and print them as they arrive.
    Listen {
        #[command(flatten)]
        args: ClientArgs,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Answer every message that carries SURBs with this text.
        #[arg(long)]
        reply: Option<String>,
    },
    /// Send a message and wait until the recipient acknowledged it.
    Send {
        #[command(flatten)]
        args: ClientArgs,
        /// The recipient's address (p2pmix1…; a typo is refused before anything is sent); repeat
        /// it to send each message to one of them chosen at random.
        #[arg(long, required = true)]
        to: Vec<String>,
        /// The message text.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        message: Option<String>,
        /// Send the contents of this file instead.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Send the message this many times (separate messages).
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Pause between the copies, milliseconds.
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        /// Draw each pause from an exponential distribution with mean --interval-ms (messages as
        /// a Poisson stream, as from an independent user) instead of a fixed pause.
        #[arg(long)]
        poisson: bool,
        /// SURBs to include, so that the recipient can answer; waits for one reply per message.
        #[arg(long, default_value_t = 0)]
        reply_surbs: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Once the consensus is in use, wait until FILE exists before sending (so that many
        /// clients can start together).
        #[arg(long, value_name = "FILE")]
        wait_for: Option<PathBuf>,
        /// After every message is acknowledged, print `done` and keep receiving (and
        /// acknowledging) until interrupted or the timeout.
        #[arg(long)]
        stay: bool,
    },
}

/// Runs a client command.
pub(crate) fn run(command: ClientCommand) -> Result<ExitCode> {
    match command {
        ClientCommand::Address(args) => {
            let (gateway, _) = runtime()?.block_on(gateway(&args))?;
            let (_, client, key) = keys(&args.data_dir)?;
            let address = Address {
                gateway,
                client: client.client_id(),
                noise_key: key.public(),
                recipient_key: key.recipient_key().public_key().to_bytes(),
            };
            println!("{address}");
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Listen {
            args,
            count,
            timeout,
            reply,
        } => runtime()?.block_on(async {
            let (mut client, tracer) = start(&args).await?;
            let result = listen(&mut client, &args, count, timeout, reply).await;
            finish(client, tracer, result)
        }),
        ClientCommand::Send {
            args,
            to,
            message,
            file,
            count,
            interval_ms,
            poisson,
            reply_surbs,
            timeout,
            wait_for,
            stay,
        } => {
            let to: Vec<Address> = to
                .iter()
                .map(|a| a.parse().with_context(|| format!("--to {a}")))
                .collect::<Result<_>>()?;
            let bytes = match (message, file) {
                (Some(m), None) => m.into_bytes(),
                (None, Some(f)) => {
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?
                }
                _ => bail!("give --message TEXT or --file FILE"),
            };
            let plan = SendPlan {
                to,
                bytes,
                count,
                interval: Duration::from_millis(interval_ms),
                poisson,
                reply_surbs,
                timeout: Duration::from_secs(timeout),
                wait_for,
                stay,
            };
            runtime()?.block_on(async {
                let (mut client, tracer) = start(&args).await?;
                let result = send(&mut client, &args, plan).await;
                finish(client, tracer, result)
            })
        }
    }
}

/// Stops the client, then closes its trace files: a failed trace write fails the command.
fn finish(client: Client, tracer: Option<Tracer>, result: Result<ExitCode>) -> Result<ExitCode> {
    drop(client);
    if let Some(tracer) = tracer {
        p2pmix::runtime::trace::finish(&tracer)?;
    }
    result
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The swarm identity, the client's own mixnet key (its id at the gateway: not derived from the
/// swarm identity) and the Noise key, kept in the data directory.
fn keys(
    data_dir: &Path,
) -> Result<(
    libp2p_identity::Keypair,
    p2pmix::client::ClientKey,
    p2pmix::client::StaticKey,
)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    Ok((
        load_or_create_identity(&data_dir.join(IDENTITY_FILE))?,
        load_or_create_client_key(&data_dir.join(CLIENT_KEY_FILE))?,
        load_or_create_static_key(&data_dir.join(NOISE_KEY_FILE))?,
    ))
}

/// The gateway from `--gateway` (remembered), from `DATA_DIR/gateway`, or, with
/// `--authorities` and neither, one chosen now among the consensus's gateways (and remembered:
/// the address names it).
async fn gateway(args: &ClientArgs) -> Result<(PeerId, Multiaddr)> {
    let remembered = args.data_dir.join(GATEWAY_FILE);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let peer_of = |address: &Multiaddr| match address.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(peer),
        _ => Err(anyhow::anyhow!(
            "the gateway address {address} does not end in /p2p/PEER_ID"
        )),
    };
    let address = match &args.gateway {
        Some(a) => {
            // Checked before it replaces what was remembered.
            peer_of(a)?;
            remember_gateway(&args.data_dir, a)?;
            a.clone()
        }
        None => match (remembered_gateway(&args.data_dir)?, &args.authorities) {
            (Some(g), _) => g
                .addresses
                .into_iter()
                .next()
                .context("no gateway address")?,
            (None, Some(file)) => {
                let authorities = Authorities::load(file)?;
                let (chosen, _) = gateway_for(&args.data_dir, &authorities).await?;
                eprintln!(
                    "chose gateway {} among the consensus's gateways (remembered in {})",
                    chosen.peer,
                    remembered.display()
                );
                chosen
                    .addresses
                    .into_iter()
                    .next()
                    .context("no gateway address")?
            }
            (None, None) => bail!(
                "no gateway: give --gateway /ip4/…/tcp/…/p2p/PEER_ID, or --authorities FILE to \
                 choose one among the consensus's gateways"
            ),
        },
    };
    Ok((peer_of(&address)?, address))
}

async fn start(args: &ClientArgs) -> Result<(Client, Option<Tracer>)> {
    let (gateway, address) = gateway(args).await?;
    let authorities = args
        .authorities
        .as_deref()
        .context("give --authorities FILE")?;
    let authorities = Authorities::load(authorities)?;
    let (identity, client, key) = keys(&args.data_dir)?;
    let tracer = args
        .trace
        .config()
        .open(&authorities, identity.public().to_peer_id())?;
    let client = Client::start_traced(
        identity,
        p2pmix::client::ClientIdentity::Key(client),
        key,
        Config {
            gateway,
            gateway_addresses: vec![address],
            authorities,
            client: ClientConfig {
                acknowledge: Acknowledge::WhenAccepted,
                ..ClientConfig::default()
            },
            store: Some(args.data_dir.join(CLIENT_STORE_FILE)),
        },
        tracer
            .clone()
            .map(|t| std::sync::Arc::new(t) as std::sync::Arc<dyn TraceSink>),
    )?;
    Ok((client, tracer))
}

/// Reports the messages a killed command left in the outbox; their outcomes follow as events.
async fn resumed(client: &Client, json: bool) -> Result<Vec<MessageId>> {
    let outbox = client.outbox().await?;
    for id in &outbox {
        print(
            json,
            json!({"event": "resumed", "id": id.to_string(), "ms": unix_ms()}),
            format!("resuming {id}"),
        );
    }
    Ok(outbox)
}

/// Prints the outcome of a sent message.
fn print_outcome(json: bool, event: &Event) {
    match event {
        Event::Delivered(id) => print(
            json,
            json!({"event": "delivered", "id": id.to_string(), "ms": unix_ms()}),
            format!("delivered {id}"),
        ),
        Event::Failed(id, reason) => print(
            json,
            json!({"event": "failed", "id": id.to_string(), "reason": reason.to_string(), "ms": unix_ms()}),
            format!("failed {id}: {reason}"),
        ),
        // Not an outcome yet (the client keeps trying), but the sender should know now.
        Event::Unroutable(id, reason) => print(
            json,
            json!({"event": "unroutable", "id": id.to_string(), "reason": reason.to_string(), "ms": unix_ms()}),
            format!("cannot send {id} yet: {reason} (trying again)"),
        ),
        _ => {}
    }
}

fn print(json: bool, value: serde_json::Value, human: String) {
    if json {
        println!("{value}");
    } else {
        println!("{human}");
    }
}

async fn listen(
    client: &mut Client,
    args: &ClientArgs,
    count: Option<u64>,
    timeout: Option<u64>,
    reply: Option<String>,
) -> Result<ExitCode> {
    let address = client.address();
    print(
        args.json,
        json!({"event": "address", "address": address.to_string()}),
        format!("listening as {address}"),
    );
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs(t));
    let mut received = 0u64;
    // Before leaving: let the last acknowledgements go out (or their senders retransmit to
    // nobody), and print what had already arrived (its senders count it as delivered).
    async fn leave(client: &mut Client, json: bool, code: ExitCode) -> Result<ExitCode> {
        while let Some(event) = client.try_next_event() {
            match event {
                Event::Received(ReceivedMessage { id, bytes, .. }) => {
                    print_received(json, id, &bytes, None, None, 0);
                    client.accept(id).await?;
                }
                other => print_outcome(json, &other),
            }
        }
        client.flush(Duration::from_secs(10)).await?;
        Ok(code)
    }
    resumed(client, args.json).await?;
    loop {
        if count.is_some_and(|c| received >= c) {
            return leave(client, args.json, ExitCode::SUCCESS).await;
        }
        let wait = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        let event = tokio::select! {
            e = client.next_event() => e,
            _ = tokio::time::sleep(wait) => {
                if deadline.is_some() {
                    return leave(client, args.json, ExitCode::from(1)).await;
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                return leave(client, args.json, ExitCode::SUCCESS).await;
            }
        };
        match event {
            None => bail!("the client stopped"),
            Some(Event::Consensus { epoch }) => print(
                args.json,
                json!({"event": "ready", "epoch": epoch, "ms": unix_ms()}),
                format!("consensus of epoch {epoch} in use"),
            ),
            Some(Event::Received(ReceivedMessage {
                id,
                bytes,
                from,
                in_reply_to,
                reply: handle,
            })) => {
                received += 1;
                print_received(
                    args.json,
                    id,
                    &bytes,
                    from,
                    in_reply_to,
                    handle.as_ref().map_or(0, |h| h.surbs()),
                );
                // Printed: now it may be acknowledged (a kill before this prints it again).
                client.accept(id).await?;
                if let (Some(text), Some(handle)) = (&reply, handle)
                    && let Err(e) = client.reply(handle, text.clone().into_bytes()).await
                {
                    eprintln!("could not reply to {id}: {e}");
                }
            }
            Some(event @ (Event::Delivered(_) | Event::Failed(..) | Event::Unroutable(..))) => {
                print_outcome(args.json, &event)
            }
            Some(_) => {}
        }
    }
}

fn print_received(
    json: bool,
    id: MessageId,
    bytes: &[u8],
    from: Option<[u8; 32]>,
    in_reply_to: Option<MessageId>,
    surbs: usize,
) {
    let text = String::from_utf8_lossy(bytes);
    print(
        json,
        json!({
            "event": "received",
            "id": id.to_string(),
            "ms": unix_ms(),
            "bytes": bytes.len(),
            "text": text,
            "from": from.map(hex::encode),
            "in_reply_to": in_reply_to.map(|m| m.to_string()),
            "surbs": surbs,
        }),
        format!("{id}: {text}"),
    );
}

/// What `client send` sends, to whom, and how.
struct SendPlan {
    to: Vec<Address>,
    bytes: Vec<u8>,
    count: u64,
    interval: Duration,
    poisson: bool,
    reply_surbs: usize,
    timeout: Duration,
    wait_for: Option<PathBuf>,
    stay: bool,
}

async fn send(client: &mut Client, args: &ClientArgs, plan: SendPlan) -> Result<ExitCode> {
    let SendPlan {
        to,
        bytes,
        count,
        interval,
        poisson,
        reply_surbs,
        timeout,
        wait_for,
        stay,
    } = plan;
    let deadline = Instant::now() + timeout;
    let mut pending: std::collections::HashSet<MessageId> =
        resumed(client, args.json).await?.into_iter().collect();
    // Messages would queue until a consensus is in force; wait for it so that the times
    // printed measure the network, not the start-up.
    loop {
        let event = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            client.next_event(),
        )
        .await;
        match event {
            Ok(Some(Event::Consensus { epoch })) => {
                print(
                    args.json,
                    json!({"event": "ready", "epoch": epoch, "ms": unix_ms()}),
                    format!("consensus of epoch {epoch} in use"),
                );
                break;
            }
            Ok(Some(event @ (Event::Delivered(_) | Event::Failed(..) | Event::Unroutable(..)))) => {
                if let Event::Delivered(id) | Event::Failed(id, _) = &event {
                    pending.remove(id);
                }
                print_outcome(args.json, &event);
            }
            Ok(Some(Event::Received(message))) => {
                print_received(
                    args.json,
                    message.id,
                    &message.bytes,
                    message.from,
                    message.in_reply_to,
                    0,
                );
                client.accept(message.id).await?;
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the client stopped"),
            Err(_) => {
                eprintln!("timed out waiting for a verified consensus");
                return Ok(ExitCode::from(1));
            }
        }
    }
    if let Some(file) = &wait_for {
        while !file.exists() {
            if Instant::now() >= deadline {
                eprintln!("timed out waiting for {}", file.display());
                return Ok(ExitCode::from(1));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut awaiting_reply: std::collections::HashSet<MessageId> = Default::default();
    let mut failed = 0u64;
    let mut sent = 0u64;
    let mut rng = rand::rng();
    let pause = move |rng: &mut rand::rngs::ThreadRng| {
        if poisson && !interval.is_zero() {
            p2pmix_mix::sample_exponential(interval, rng).as_duration()
        } else {
            interval
        }
    };
    let mut next_send = Instant::now()
        + if poisson {
            pause(&mut rng)
        } else {
            Duration::ZERO
        };
    let mut done = false;
    let mut interrupt = Interrupt::new()?;
    loop {
        if !done && sent == count && pending.is_empty() && awaiting_reply.is_empty() {
            done = true;
            print(
                args.json,
                json!({"event": "done", "sent": sent, "failed": failed, "ms": unix_ms()}),
                format!("done: {sent} sent, {failed} failed"),
            );
            if !stay {
                break;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            if done {
                // Staying was asked for until the timeout: a normal end.
                client.flush(Duration::from_secs(10)).await?;
                break;
            }
            eprintln!(
                "timed out: {} of {count} not acknowledged, {} replies missing",
                pending.len(),
                awaiting_reply.len()
            );
            return Ok(ExitCode::from(1));
        }
        if sent < count && now >= next_send {
            let recipient = &to[rng.random_range(0..to.len())];
            let id = client.send(recipient, bytes.clone(), reply_surbs).await?;
            sent += 1;
            next_send = now + pause(&mut rng);
            pending.insert(id);
            if reply_surbs > 0 {
                awaiting_reply.insert(id);
            }
            print(
                args.json,
                json!({"event": "sent", "id": id.to_string(), "n": sent, "ms": unix_ms()}),
                format!("sent {id} ({} bytes)", bytes.len()),
            );
            continue;
        }
        let until = if sent < count {
            next_send.min(deadline)
        } else {
            deadline
        };
        let event = tokio::select! {
            e = client.next_event() => e,
            _ = tokio::time::sleep(until.saturating_duration_since(now)) => continue,
            _ = interrupt.recv() => {
                // Like `listen`: the last acknowledgements go out before leaving.
                client.flush(Duration::from_secs(10)).await?;
                if !done {
                    eprintln!("interrupted: {} of {count} not acknowledged", pending.len());
                    return Ok(ExitCode::from(1));
                }
                break;
            }
        };
        match event {
            None => bail!("the client stopped"),
            Some(event @ Event::Delivered(_)) => {
                if let Event::Delivered(id) = &event
                    && pending.remove(id)
                {
                    print_outcome(args.json, &event);
                }
            }
            Some(event @ Event::Unroutable(..)) => print_outcome(args.json, &event),
            Some(event @ Event::Failed(..)) => {
                if let Event::Failed(id, _) = &event {
                    pending.remove(id);
                    awaiting_reply.remove(id);
                }
                failed += 1;
                print_outcome(args.json, &event);
            }
            Some(Event::Received(ReceivedMessage {
                id,
                bytes,
                in_reply_to,
                ..
            })) => {
                if let Some(answered) = in_reply_to {
                    awaiting_reply.remove(&answered);
                }
                let text = String::from_utf8_lossy(&bytes);
                print(
                    args.json,
                    json!({
                        "event": "received",
                        "id": id.to_string(),
                        "ms": unix_ms(),
                        "text": text,
                        "in_reply_to": in_reply_to.map(|m| m.to_string()),
                    }),
                    match in_reply_to {
                        Some(m) => format!("reply to {m}: {text}"),
                        None => format!("{id}: {text}"),
                    },
                );
                client.accept(id).await?;
            }
            Some(Event::Consensus { epoch }) => print(
                args.json,
                json!({"event": "ready", "epoch": epoch, "ms": unix_ms()}),
                format!("consensus of epoch {epoch} in use"),
            ),
            Some(_) => {}
        }
    }
    // Acknowledgements of replies, and the store, before leaving.
    client.flush(Duration::from_secs(5)).await?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// SIGINT (Ctrl-C) and, on unix, SIGTERM, caught from the moment this is made (a signal that
/// comes while the loop is busy is not lost).
struct Interrupt {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 2],
}

impl Interrupt {
    fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Interrupt {
                signals: [
                    signal(SignalKind::interrupt()).context("catching SIGINT")?,
                    signal(SignalKind::terminate()).context("catching SIGTERM")?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let [int, term] = &mut self.signals;
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
