//! Share links from the CLI: `ionshard drive share|unshare|shares` on the
//! owner's client (the links its `drive serve` opens), and `ionshard drive
//! open LINK` on a friend's node.
//!
//! A link has two forms: `http(s)://HOST:PORT/s/ID/TOKEN` through the
//! owner's `drive serve` for someone with only a browser, and
//! `ionshard:PEER/ID/TOKEN` for a friend's node, which asks the owner's
//! node over libp2p (only nodes paired as friends are answered).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use drive::friends::{Answer, MAX_ANSWER, Request};
use serde_json::json;

use crate::drive_files::On;

/// `ionshard drive share|unshare|shares|open`.
#[derive(clap::Subcommand)]
pub(crate) enum ShareCommand {
    /// A read link to a file or folder of the drive, for a friend's node
    /// and for a browser (through this client's `drive serve`, which must
    /// be reachable by whoever opens it).
    Share {
        /// The drive path.
        path: String,
        /// How long it opens (at most 30d).
        #[arg(long = "for", value_parser = crate::size::duration_arg, default_value = "7d")]
        life: Duration,
        #[command(flatten)]
        on: On,
    },
    /// Revoke a link: it opens no more, at once.
    Unshare {
        /// The link's id (`drive shares` lists them).
        id: String,
        #[command(flatten)]
        on: On,
    },
    /// This client's links.
    Shares {
        #[command(flatten)]
        on: On,
    },
    /// Open a link a friend gave (`ionshard:PEER/ID/TOKEN`): list its
    /// folder, or download its file (or, with --path, a file under it).
    Open {
        /// The link.
        link: String,
        /// A path under the shared folder.
        #[arg(long, default_value = "")]
        path: String,
        /// Where to write a file [default: its name, here].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace a file at --out.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        on: On,
    },
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn shares_file(on: &On) -> PathBuf {
    on.dir().join("drive").join("shares.json")
}

pub(crate) fn run(c: ShareCommand) -> Result<()> {
    let rt = crate::node_cmd::runtime()?;
    match c {
        ShareCommand::Share { path, life, on } => rt.block_on(share(&path, life, on)),
        ShareCommand::Unshare { id, on } => {
            let s = web::revoke_share(&shares_file(&on), &id).map_err(|e| anyhow!("{e}"))?;
            if on.json {
                println!("{}", json!({ "revoked": s.id, "path": s.path }));
            } else {
                println!("revoked the link to {} ({}): it opens no more", s.path, s.id);
            }
            Ok(())
        }
        ShareCommand::Shares { on } => {
            let all = web::shares(&shares_file(&on)).map_err(|e| anyhow!("{e}"))?;
            if on.json {
                println!("{}", json!({ "shares": all }));
                return Ok(());
            }
            if all.is_empty() {
                println!("no links (`ionshard drive share PATH`)");
            }
            for s in all {
                let state = if s.revoked {
                    "revoked".to_string()
                } else if s.expires <= now() {
                    "expired".to_string()
                } else {
                    format!("until {}", backup::utc(s.expires.saturating_mul(1_000_000_000)))
                };
                println!("{}  {}  {state}", s.id, s.path);
            }
            Ok(())
        }
        ShareCommand::Open { link, path, out, force, on } => rt.block_on(open(&link, &path, out, force, on)),
    }
}

async fn share(path: &str, life: Duration, on: On) -> Result<()> {
    let p = drive::tree::normal(path)?;
    let (d, _h) = on.open().await?;
    let read = d.read().await?;
    let item = web::identity(&read.tree, &p).ok_or_else(|| drive::Error::NotInDrive(p.clone()))?;
    let (id, token) = web::add_share(&shares_file(&on), &p, item, life.as_secs(), now()).map_err(|e| anyhow!("{e}"))?;
    let (key, _) = net::load_or_create_key(&on.dir().join("identity.key"))?;
    let friend = format!("ionshard:{}/{id}/{token}", key.public().to_peer_id());
    let web_path = format!("/s/{id}/{token}");
    if on.json {
        println!(
            "{}",
            json!({ "id": id, "path": p, "expires": now() + life.as_secs(), "friend_link": friend, "web_path": web_path })
        );
    } else {
        println!("a link to {p}, open for {} s:", life.as_secs());
        println!("  for a friend's node: ionshard drive open {friend}");
        println!("  for a browser, through this client's `drive serve`: http://HOST:PORT{web_path}");
        println!("  revoke it with: ionshard drive unshare {id}");
    }
    Ok(())
}

/// `ionshard:PEER/ID/TOKEN` (or `ionshard://…`): the owner's node, the id, the token.
fn parse(link: &str) -> Result<(net::PeerId, String, String)> {
    let bad = || anyhow!("{link:?} is not a friend's share link: it looks like ionshard:PEER/ID/TOKEN (copy it whole)");
    let rest = link.trim().strip_prefix("ionshard:").ok_or_else(bad)?.trim_start_matches('/');
    let mut parts = rest.split('/');
    let (Some(peer), Some(id), Some(token), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let peer = peer.parse().map_err(|_| bad())?;
    Ok((peer, id.to_string(), token.to_string()))
}

/// Ask the link's owner; a file it is still reading from its devices is
/// asked for again (each second, for at most ten minutes).
async fn ask(client: &net::Client, owner: net::PeerId, r: &Request) -> Result<Answer> {
    for _ in 0..600 {
        let b = client
            .ask_friend(owner, &r.encode(), MAX_ANSWER)
            .await
            .with_context(|| format!("the link's owner ({owner}) is not reachable: its drive node must be running"))?;
        match Answer::decode(&b)? {
            Answer::Refused { reason: drive::friends::Refusal::Busy, .. } => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Answer::Refused { message, .. } => bail!("the link's owner refused: {}", printable(&message)),
            a => return Ok(a),
        }
    }
    bail!("the link's owner was still reading the file from its devices after ten minutes")
}

/// Text from another person, safe to print: no terminal escapes.
pub(crate) fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' { '?' } else { c }).collect()
}

async fn open(link: &str, path: &str, out: Option<PathBuf>, force: bool, on: On) -> Result<()> {
    let (owner, id, token) = parse(link)?;
    let (client, _h) = on.net().await?;
    let first = Request::Open { link: id.clone(), token: token.clone(), path: path.to_string(), offset: 0 };
    match ask(&client, owner, &first).await? {
        Answer::Listing(items) => {
            if on.json {
                let items: Vec<_> =
                    items.iter().map(|l| json!({ "name": l.name, "dir": l.dir, "size": l.size })).collect();
                println!("{}", json!({ "listing": items }));
            } else {
                if items.is_empty() {
                    println!("(an empty folder)");
                }
                for l in items {
                    let size = if l.dir { "folder".to_string() } else { crate::size::human(l.size) };
                    println!("{:>10}  {}{}", size, printable(&l.name), if l.dir { "/" } else { "" });
                }
            }
            Ok(())
        }
        Answer::Bytes { total, name, data } => {
            let target = out.unwrap_or_else(|| PathBuf::from(drive::post::safe_name(&name, "file")));
            if target.exists() && !force {
                bail!("{} exists: give --force to replace it, or --out PATH", target.display());
            }
            let pb = indicatif::ProgressBar::new(total);
            if on.json {
                pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let got = download(&client, owner, &first, (total, data), &target, force, &pb).await;
            pb.finish_and_clear();
            let got = got?;
            if on.json {
                println!("{}", json!({ "file": target.display().to_string(), "bytes": got }));
            } else {
                println!("{} bytes into {}", got, target.display());
            }
            Ok(())
        }
        other => bail!("the link's owner answered {other:?}"),
    }
}

/// The file the first answer began, into `target` whole or not at all.
async fn download(
    client: &net::Client,
    owner: net::PeerId,
    first: &Request,
    (total, data): (u64, Vec<u8>),
    target: &Path,
    force: bool,
    pb: &indicatif::ProgressBar,
) -> Result<u64> {
    let Request::Open { link, token, path, .. } = first else { bail!("not an open request") };
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing in {}", dir.display()))?;
    let mut have = data.len() as u64;
    tmp.write_all(&data)?;
    pb.set_position(have);
    // Each answer carries at most a part: bounded by the file's size.
    let most = total / drive::friends::PART as u64 + 2;
    for _ in 0..most {
        if have >= total {
            break;
        }
        let r = Request::Open { link: link.clone(), token: token.clone(), path: path.clone(), offset: have };
        match ask(client, owner, &r).await? {
            Answer::Bytes { total: t, data, .. } if t == total && !data.is_empty() => {
                tmp.write_all(&data)?;
                have += data.len() as u64;
                pb.set_position(have);
            }
            Answer::Bytes { .. } => bail!("the shared file changed while it was read: open the link again"),
            other => bail!("the link's owner answered {other:?}"),
        }
    }
    if have != total {
        bail!("got {have} of {total} bytes");
    }
    tmp.as_file().sync_all()?;
    if force {
        tmp.persist(target).with_context(|| format!("writing {}", target.display()))?;
    } else {
        // A file made at that name meanwhile is not replaced either.
        tmp.persist_noclobber(target)
            .with_context(|| format!("writing {} (give --force to replace it)", target.display()))?;
    }
    Ok(have)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_whole_or_not_at_all() {
        let p = net::PeerId::random();
        let (peer, id, token) = parse(&format!("ionshard:{p}/abc/def")).expect("parses");
        assert_eq!((peer, id.as_str(), token.as_str()), (p, "abc", "def"));
        assert!(parse(&format!("ionshard://{p}/abc/def")).is_ok());
        for bad in [
            format!("ionshard:{p}/abc"),
            "http://x/s/a/b".to_string(),
            format!("ionshard:{p}/a/b/c"),
            "ionshard:x/a/b".into(),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}
