//! Letters between friends: `ionshard drive msg send|list`, the friends'
//! protocol each node answers (a device holds its owner's letters while the
//! friend is offline, and delivers them; a client's drive node receives
//! its friends' letters), and the courier that delivers what a node holds.
//!
//! A letter goes from the sender's client straight to the friend's node
//! when that node answers; otherwise to (at most two of) the sender's own
//! devices, which keep it sealed (they cannot read it) and deliver it when
//! the friend comes online. Nothing leaves the sender's outbox before a
//! device has all of it, or the friend has.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use drive::friends::{Answer, Envelope, MAX_ANSWER, MAX_REQUEST, Refusal, Request};
use drive::post::{Inbox, Kept, Letters, Spool};
use serde_json::json;

use crate::drive_files::On;

/// Bytes of letters a device holds for its owner's clients.
const HELD_QUOTA: u64 = 8 << 30;
/// Bytes of letters a node takes from its friends before they are whole.
const INCOMING_QUOTA: u64 = 64 << 30;
/// Bytes of letters a client keeps in its outbox.
const OUTBOX_QUOTA: u64 = 1 << 40;
/// The longest wait between two tries to deliver a letter.
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// Devices that hold a letter while the friend is offline.
const HOLDERS: usize = 2;

/// `ionshard drive msg …`.
#[derive(clap::Subcommand)]
pub(crate) enum MsgCommand {
    /// Send a friend a text, a file, or both, end-to-end encrypted. If the
    /// friend's node is offline, this person's own devices hold the letter
    /// (sealed) and deliver it when it comes online.
    Send {
        /// The friend: the name or peer id it was paired with (`drive pair --friend`).
        friend: String,
        /// The text.
        text: Option<String>,
        /// A file to send with it.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        on: On,
    },
    /// Forget letters in this node's list (the files received stay where
    /// they were saved): all of them, or those older than --older-than.
    Clear {
        /// Only those written longer ago than this (like 30d).
        #[arg(long, value_parser = crate::size::duration_arg)]
        older_than: Option<Duration>,
        #[command(flatten)]
        on: On,
    },
    /// The letters sent and received, oldest first. With --wait, stays
    /// online that long first to receive letters and deliver those waiting.
    List {
        /// Stay online this long first (like 30s, 5m).
        #[arg(long, value_parser = crate::size::duration_arg)]
        wait: Option<Duration>,
        /// With --wait: stop waiting once this many letters arrived.
        #[arg(long, requires = "wait")]
        until: Option<usize>,
        #[command(flatten)]
        on: On,
    },
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex(id: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(id)
}

/// Why a delivery did not happen.
#[derive(Debug)]
pub(crate) enum Failed {
    /// It never will: the receiver refuses the letter itself.
    Never(String),
    /// Not now (offline, busy, full): try again later.
    Later(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Never(w) | Failed::Later(w) => f.write_str(w),
        }
    }
}

async fn ask(client: &net::Client, via: net::PeerId, r: &Request) -> Result<Answer, Failed> {
    let b = client.ask_friend(via, &r.encode(), MAX_ANSWER).await.map_err(|e| Failed::Later(e.to_string()))?;
    Answer::decode(&b).map_err(|e| Failed::Later(format!("{via} answered nonsense: {e}")))
}

fn refusal(via: net::PeerId, a: Answer) -> Failed {
    match a {
        Answer::Refused { reason: Refusal::NotFriend | Refusal::Forged | Refusal::BadRequest, message } => {
            Failed::Never(format!("{via}: {message}"))
        }
        Answer::Refused { message, .. } => Failed::Later(format!("{via}: {message}")),
        other => Failed::Later(format!("{via}: an unexpected answer {other:?}")),
    }
}

/// Hand letter `e`, kept in `spool`, to `via` (the friend's node, or one
/// of the owner's devices to hold it), from the part it lacks;
/// `progress` gets the sealed bytes it has.
pub(crate) async fn deliver(
    client: &net::Client,
    via: net::PeerId,
    spool: &Spool,
    e: &Envelope,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), Failed> {
    let mut next = match ask(client, via, &Request::Offer(e.clone())).await? {
        Answer::Next(n) => n,
        other => return Err(refusal(via, other)),
    };
    // Each round moves a part on, or the receiver says where it stands.
    let mut rounds = 0u64;
    while next < e.parts {
        rounds += 1;
        if rounds > 2 * u64::from(e.parts) + 8 {
            return Err(Failed::Later(format!("{via} keeps asking for part {next}")));
        }
        progress(u64::from(next) * drive::friends::SEALED_PART as u64);
        let sealed = spool.part(e, next).map_err(|err| Failed::Later(format!("reading part {next}: {err}")))?;
        next = match ask(client, via, &Request::Part { id: e.id, index: next, sealed }).await? {
            Answer::Next(n) => n,
            Answer::Refused { reason: Refusal::NoSuchLetter, .. } => {
                match ask(client, via, &Request::Offer(e.clone())).await? {
                    Answer::Next(n) => n,
                    other => return Err(refusal(via, other)),
                }
            }
            other => return Err(refusal(via, other)),
        };
    }
    progress(e.sealed_len());
    Ok(())
}

/// Send letter `e` out of `spool`: to the friend; if the friend is out
/// of reach, to (at most [`HOLDERS`] of) `devices`, the owner's own, to
/// hold and deliver. Its state then (`delivered`, `held by N device(s)`).
pub(crate) async fn send_out(
    client: &net::Client,
    spool: &Spool,
    e: &Envelope,
    devices: &[net::PeerId],
    progress: &(dyn Fn(String, u64) + Sync),
) -> Result<String, Failed> {
    let mut why = match deliver(client, e.to, spool, e, &|n| progress("to the friend".into(), n)).await {
        Ok(()) => return Ok("delivered".into()),
        Err(Failed::Never(w)) => return Err(Failed::Never(w)),
        Err(Failed::Later(w)) => vec![format!("the friend: {w}")],
    };
    let mut held = 0;
    for d in devices {
        if held == HOLDERS {
            break;
        }
        match deliver(client, *d, spool, e, &|n| progress(format!("to device {d} to hold"), n)).await {
            Ok(()) => held += 1,
            Err(w) => why.push(format!("device {d}: {w}")),
        }
    }
    if held > 0 { Ok(format!("held by {held} device(s)")) } else { Err(Failed::Later(why.join("; "))) }
}

/// Deliver the letters `spool` holds until the node stops, each tried
/// again after 1, 2, 4… s (at most [`MAX_BACKOFF`]): to its friend, or,
/// with `devices` (a client's outbox), to the owner's devices to hold. One
/// delivered, held, or refused for good is dropped here (and its state set
/// in `letters`, the sender's own list, if given).
pub(crate) async fn courier(
    client: net::Client,
    spool: Arc<Spool>,
    letters: Option<Letters>,
    devices: Vec<net::PeerId>,
) {
    let mut wait: HashMap<[u8; 16], (tokio::time::Instant, Duration)> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = spool.clone();
        let ready = tokio::task::spawn_blocking(move || s.ready()).await.unwrap_or_default();
        wait.retain(|id, _| ready.iter().any(|e| e.id == *id));
        for e in ready {
            let now = tokio::time::Instant::now();
            if wait.get(&e.id).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            let state = match send_out(&client, &spool, &e, &devices, &|_, _| {}).await {
                Ok(state) => state,
                Err(Failed::Never(why)) => {
                    eprintln!("letter {} to {} can never be delivered, dropped: {why}", hex(&e.id), e.to);
                    format!("refused: {why}")
                }
                Err(Failed::Later(why)) => {
                    let back = wait.get(&e.id).map_or(Duration::from_secs(1), |(_, d)| (*d * 2).min(MAX_BACKOFF));
                    // Said until the tries are as far apart as they get.
                    if wait.get(&e.id).is_none_or(|(_, d)| *d < MAX_BACKOFF) {
                        eprintln!(
                            "letter {} to {}: not out yet ({why}); again in {} s",
                            hex(&e.id),
                            e.to,
                            back.as_secs()
                        );
                    }
                    wait.insert(e.id, (tokio::time::Instant::now() + back, back));
                    continue;
                }
            };
            spool.remove(&e.id);
            wait.remove(&e.id);
            if let Some(l) = &letters
                && let Err(err) = l.set_state(&e.id, &state)
            {
                eprintln!("letter {}: {err}", hex(&e.id));
            }
        }
    }
}

/// A device's answer on the friends' protocol: it holds letters its own
/// clients wrote, for their friends; it is nobody's friend itself.
fn device_answer(device: &drive::Device, held: &Spool, me: net::PeerId, peer: net::PeerId, q: &[u8]) -> Answer {
    let request = match Request::decode(q) {
        Ok(r) => r,
        Err(e) => return Answer::refused(Refusal::BadRequest, e.to_string()),
    };
    let client = || device.is_client(&peer).map_err(|why| Answer::refused(Refusal::NotFriend, why));
    let r = match request {
        Request::Offer(e) => client().and_then(|()| {
            if e.to == me {
                return Err(Answer::refused(
                    Refusal::BadRequest,
                    "this is a device: it keeps no friends and receives no letters (send to the friend's client)",
                ));
            }
            if e.from != peer {
                return Err(Answer::refused(Refusal::BadRequest, "a client may leave only letters it wrote"));
            }
            held.offer(&e).map(Answer::Next).map_err(|(r, m)| Answer::refused(r, m))
        }),
        Request::Part { id, index, sealed } => client().and_then(|()| {
            let mine = |e: &Envelope| e.from == peer;
            let (_, next) = held.put(&id, index, &sealed, mine).map_err(|(r, m)| Answer::refused(r, m))?;
            Ok(Answer::Next(next))
        }),
        Request::Held => {
            client().map(|()| Answer::Ids(held.all().into_iter().filter(|e| e.from == peer).map(|e| e.id).collect()))
        }
        Request::Open { .. } => Err(Answer::refused(
            Refusal::NoLink,
            "a share link opens through its owner's drive node (`ionshard drive serve`), not on a device",
        )),
    };
    r.unwrap_or_else(|a| a)
}

/// On a device: hold the owner's clients' letters and deliver them.
pub(crate) fn serve_device(
    client: &net::Client,
    device: Arc<drive::Device>,
) -> Result<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    let held = Arc::new(Spool::open(&device.dir().join("held"), HELD_QUOTA)?);
    let me = client.peer_id();
    let h = held.clone();
    let serving = client.serve_friend(MAX_REQUEST, move |peer, q| {
        let (device, held) = (device.clone(), h.clone());
        async move {
            tokio::task::spawn_blocking(move || device_answer(&device, &held, me, peer, &q).encode())
                .await
                .unwrap_or_default()
        }
    })?;
    Ok((serving, tokio::spawn(courier(client.clone(), held, None, Vec::new()))))
}

/// A share link's answer, on its way.
pub(crate) type Opening = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;

/// What a client's node does with share links friends open (the link's
/// id, its token, a path under it, an offset).
pub(crate) type Opener = Arc<dyn Fn(String, String, String, u64) -> Opening + Send + Sync>;

/// On a client's node: receive its friends' letters (and open share links
/// for them, with `opener`), and deliver the letters in its outbox.
pub(crate) fn serve_client(
    client: &net::Client,
    dir: &std::path::Path,
    devices: Vec<net::PeerId>,
    opener: Option<Opener>,
) -> Result<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    let ddir = dir.join("drive");
    let inbox = Arc::new(Inbox::open(client.peer_id(), &ddir, INCOMING_QUOTA)?);
    let pairs = ddir.join("pairs.json");
    let serving = client.serve_friend(MAX_REQUEST, move |peer, q| {
        let (inbox, opener, pairs) = (inbox.clone(), opener.clone(), pairs.clone());
        async move {
            let request = match Request::decode(&q) {
                Ok(r) => r,
                Err(e) => return Answer::refused(Refusal::BadRequest, e.to_string()).encode(),
            };
            let answer = match request {
                Request::Open { link, token, path, offset } => {
                    let friend = drive::Pairs::load(&pairs).map(|p| p.friend_key(&peer).is_some()).unwrap_or(false);
                    match (&opener, friend) {
                        (_, false) => Answer::refused(
                            Refusal::NotFriend,
                            format!("{peer} is not a friend of this node: a share link opens for friends' nodes"),
                        ),
                        (None, true) => Answer::refused(Refusal::NoLink, "this node serves no share links"),
                        (Some(o), true) => o(link, token, path, offset).await,
                    }
                }
                Request::Held => Answer::Ids(Vec::new()),
                other => tokio::task::spawn_blocking(move || match other {
                    Request::Offer(e) => inbox.offer(e),
                    Request::Part { id, index, sealed } => inbox.part(&id, index, &sealed),
                    _ => Answer::refused(Refusal::BadRequest, "unexpected"),
                })
                .await
                .unwrap_or_else(|e| Answer::refused(Refusal::Internal, e.to_string())),
            };
            answer.encode()
        }
    })?;
    let outbox = Arc::new(Spool::open(&ddir.join("outbox"), OUTBOX_QUOTA)?);
    Ok((serving, tokio::spawn(courier(client.clone(), outbox, Some(Letters::at(&ddir)), devices))))
}

pub(crate) fn run(c: MsgCommand) -> Result<()> {
    let rt = crate::node_cmd::runtime()?;
    match c {
        MsgCommand::Send { friend, text, file, on } => rt.block_on(send(&friend, text, file, on)),
        MsgCommand::List { wait, until, on } => rt.block_on(list(wait, until, on)),
        MsgCommand::Clear { older_than, on } => {
            let cutoff = older_than.map_or(u64::MAX, |d| now().saturating_sub(d.as_secs()));
            let letters = Letters::at(&on.dir().join("drive"));
            let gone = letters.update(|l| {
                let before = l.len();
                l.retain(|k| k.at >= cutoff);
                before - l.len()
            })?;
            if on.json {
                println!("{}", json!({ "forgotten": gone }));
            } else {
                println!(
                    "forgot {gone} letter(s); files received stay in {}",
                    on.dir().join("drive/received").display()
                );
            }
            Ok(())
        }
    }
}

fn progress_bar(json_out: bool, len: u64, what: String) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    if json_out || len == 0 {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(what);
    pb
}

async fn send(friend: &str, text: Option<String>, file: Option<PathBuf>, on: On) -> Result<()> {
    let text = text.unwrap_or_default();
    if text.is_empty() && file.is_none() {
        bail!("nothing to send: give a text, --file PATH, or both");
    }
    let dir = on.dir();
    let ddir = dir.join("drive");
    let pairs = drive::Pairs::load(&ddir.join("pairs.json"))?;
    let friends = pairs.friends();
    let by_name: Vec<&(net::PeerId, String)> = friends.iter().filter(|(_, n)| n == friend).collect();
    if by_name.len() > 1 && !friends.iter().any(|(p, _)| p.to_string() == friend) {
        bail!("{} friends are named {friend:?}: give the peer id (`ionshard drive pairs` lists them)", by_name.len());
    }
    let (to, name) = friends
        .iter()
        .find(|(p, _)| p.to_string() == friend)
        .or_else(|| by_name.first().copied())
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = friends.iter().map(|(_, n)| n.as_str()).collect();
            anyhow!(
                "{friend:?} is not a friend of this node (friends: {}); pair first: `ionshard drive pair --friend` on \
                 one side, `drive join CODE --friend` on the other",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )
        })?;
    let key = pairs.friend_key(&to).ok_or_else(|| {
        anyhow!("the pairing with {name:?} predates friend keys: pair again with `--friend` to send letters")
    })?;
    let (key_file, _) = net::load_or_create_key(&dir.join("identity.key"))?;
    let me = key_file.public().to_peer_id();
    let outbox = Spool::open(&ddir.join("outbox"), OUTBOX_QUOTA)?;
    let letters = Letters::at(&ddir);
    // Listed first: a letter is never sent and missing from the list.
    let id: [u8; 16] = rand::random();
    let len = match &file {
        Some(p) => std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?.len(),
        None => 0,
    };
    let kept = Kept {
        id: hex(&id),
        incoming: false,
        peer: to.to_string(),
        name: name.clone(),
        at: now(),
        text: text.clone(),
        file: file.as_ref().map(|p| drive::post::KeptFile {
            name: drive::post::safe_name(
                &p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                "file",
            ),
            len,
            path: p.display().to_string(),
        }),
        state: "sealing".into(),
    };
    letters.update(|l| l.push(kept))?;
    let (o, f) = (outbox, file.clone());
    let (key2, t2) = (key.clone(), text.clone());
    let written = tokio::task::spawn_blocking(move || {
        drive::post::write_letter(&o, &key2, (me, to), id, &t2, f.as_deref(), now()).map(|e| (e, o))
    })
    .await?;
    let (e, outbox) = match written {
        Ok(x) => x,
        Err(err) => {
            letters.set_state(&id, &format!("not sent: {err}"))?;
            return Err(err.into());
        }
    };
    letters.set_state(&id, "waiting")?;
    let (client, _h) = on.net().await?;
    let pb = progress_bar(on.json, e.sealed_len(), format!("to {name}"));
    let shown = |what: String, n: u64| {
        pb.set_message(what);
        pb.set_position(n);
    };
    let devices = on.devices().unwrap_or_default();
    let (state, why) = match send_out(&client, &outbox, &e, &devices, &shown).await {
        Ok(state) => (state, String::new()),
        Err(Failed::Never(w)) => {
            pb.finish_and_clear();
            outbox.remove(&e.id);
            letters.set_state(&e.id, &format!("refused: {w}"))?;
            bail!("{name} refused the letter: {w}");
        }
        Err(Failed::Later(w)) => ("waiting".to_string(), w),
    };
    pb.finish_and_clear();
    if state != "waiting" {
        outbox.remove(&e.id);
        letters.set_state(&e.id, &state)?;
    } else if outbox.envelope(&e.id).is_none() {
        // A running `drive serve` took it meanwhile, and says how it went.
    } else {
        letters.set_state(&e.id, &state)?;
    }
    if on.json {
        println!(
            "{}",
            json!({ "id": hex(&e.id), "to": to.to_string(), "name": name, "state": state, "bytes": e.len, "why": why })
        );
    } else {
        match state.as_str() {
            "delivered" => println!("delivered to {name}"),
            "waiting" => println!(
                "{name} and this person's devices are out of reach ({why}); the letter waits in {}: `ionshard drive \
                 serve` or `drive msg list --wait 1m` delivers it",
                ddir.join("outbox").display()
            ),
            s => println!("{name} is offline: {s}, delivered when {name} comes online"),
        }
    }
    Ok(())
}

async fn list(wait: Option<Duration>, until: Option<usize>, on: On) -> Result<()> {
    let dir = on.dir();
    let letters = Letters::at(&dir.join("drive"));
    if let Some(w) = wait {
        let (client, _h) = on.net().await?;
        let (serving, courier) = serve_client(&client, &dir, on.devices().unwrap_or_default(), None)?;
        if !on.json {
            eprintln!("online for {} s: receiving letters, delivering those waiting", w.as_secs());
        }
        let received = || letters.list().map(|l| l.iter().filter(|k| k.incoming).count()).unwrap_or(0);
        let (before, deadline) = (received(), tokio::time::Instant::now() + w);
        while tokio::time::Instant::now() < deadline {
            if until.is_some_and(|n| received() >= before + n) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250).min(w)).await;
        }
        serving.abort();
        courier.abort();
        // Letters the devices no longer hold were delivered.
        if let Ok(devices) = on.devices() {
            let held = letters.list()?.into_iter().filter(|k| !k.incoming && k.state.starts_with("held"));
            let held: Vec<Kept> = held.collect();
            if !held.is_empty() {
                let mut still = std::collections::HashSet::new();
                let mut answered = 0;
                for d in &devices {
                    if let Ok(Answer::Ids(ids)) = ask(&client, *d, &Request::Held).await {
                        answered += 1;
                        still.extend(ids.iter().map(|i| hex(i)));
                    }
                }
                // Only when every device answered: one that did not may hold it still.
                if answered == devices.len() {
                    letters.update(|l| {
                        for k in l.iter_mut().filter(|k| !k.incoming && k.state.starts_with("held")) {
                            if !still.contains(&k.id) {
                                k.state = "delivered".into();
                            }
                        }
                    })?;
                }
            }
        }
    }
    let all = letters.list().context("reading the letters")?;
    if on.json {
        println!("{}", json!({ "letters": all }));
        return Ok(());
    }
    if all.is_empty() {
        println!("no letters yet (`ionshard drive msg send FRIEND TEXT`)");
    }
    for k in &all {
        let when = backup::utc(k.at.saturating_mul(1_000_000_000));
        let who = if k.incoming { format!("from {}", k.name) } else { format!("to {}", k.name) };
        let file = k.file.as_ref().map(|f| format!(" [{} {}: {}]", f.name, crate::size::human(f.len), f.path));
        let state = if k.incoming { String::new() } else { format!(" ({})", k.state) };
        // One line a letter: a text's own line breaks cannot fake another.
        let text = k.text.replace('\n', " ⏎ ");
        let line = format!("{when} {who}{state}: {text}{}", file.unwrap_or_default());
        println!("{}", crate::drive_share::printable(&line));
    }
    Ok(())
}
