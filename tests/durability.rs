//! Durability on real nodes (tasks of this process, each peer in a
//! household of its own on 127.0.0.x): audits catch a peer that lost a
//! shard or answers garbage, repair rebuilds what is lost onto new peers,
//! a household never holds more than m shards of a segment, and a churn
//! run loses nothing.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Liar, image};
use harness::tasks::{Network, Node, PeerSpec, Spec, start_node};
use net::{Keypair, PeerId, Role};

/// Quick durability settings: repair at the first loss unless `margin` says otherwise.
fn quick(grace: u64, margin: Option<u8>) -> impl FnOnce(&mut spn::Config) {
    move |c: &mut spn::Config| {
        c.durability = spn::Settings::quick(Duration::from_secs(grace));
        c.durability.repair_margin = margin;
        // The loops run on their own too; the tests also drive them.
        c.durability.audit_every = Duration::from_secs(3600);
    }
}

async fn start(root: &Path, peers: Vec<PeerSpec>, tune: impl FnOnce(&mut spn::Config)) -> Network {
    let spec = Spec { peers, households: true, spn: true, trusted: Keypair::generate_ed25519() };
    Network::start(root, &spec, tune).await.expect("the network starts")
}

fn spn_of(n: &Network) -> &spn::Spn {
    &n.spn.as_ref().expect("an SPN").spn
}

async fn publish(n: &Network, dir: &Path, bytes: &[u8], k: u8, m: u8) -> spn::JobResult {
    let path = dir.join(format!("object-{}", blake3::hash(bytes).to_hex()));
    std::fs::write(&path, bytes).expect("write");
    let res = spn_of(n).publish_file(&path, "acme", "backup", k, m).await.expect("publish");
    // A hedged put may have left a surplus copy: its delete goes out at the
    // job's end (up to 15 s here, so the tests see only placed shards).
    let deadline = Instant::now() + Duration::from_secs(15);
    while spn_of(n).pending_deletes().expect("queue") > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    res
}

/// Fetch an object back through the one fetcher, with the SPN's current placement.
async fn read_back(s: &spn::Spn, boot: &net::Multiaddr, res: &spn::JobResult, out: &Path) -> Vec<u8> {
    let device = start_node(
        Role::Client,
        None,
        vec![boot.clone()],
        vec![],
        None,
        Arc::new(net::Honest),
        Keypair::generate_ed25519(),
    )
    .await
    .expect("device");
    let (manifest, placement) = s.object_placement(&res.manifest).expect("placement");
    let hex = |s: &str| data_encoding::HEXLOWER.decode(s.as_bytes()).expect("hex");
    let expect = client::Expect {
        label: "object".into(),
        manifest: res.manifest.parse().expect("cid"),
        length: res.length,
        blake3: hex(&res.blake3).try_into().expect("32 bytes"),
    };
    let mut opts = client::FetchOptions::new(out.to_path_buf());
    opts.min_late = Duration::from_secs(2);
    let key: [u8; 32] = hex(&res.read_key).try_into().expect("32 bytes");
    client::fetch(&device.client, &manifest[..], placement, &expect, key, &opts, Arc::new(client::Hidden))
        .await
        .expect("the object reads back");
    device.stop().await;
    std::fs::read(out).expect("read the fetched object")
}

/// The peers recorded as holding shard `cid` of `object`.
fn holders_of(s: &spn::Spn, object: &str, cid: &str) -> Vec<String> {
    let (_, p) = s.object_placement(object).expect("placement");
    p.shards.get(cid).into_iter().flatten().map(|i| p.peers[*i as usize].clone()).collect()
}

/// Shard files in a peer's store: (cid, path).
fn stored(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir.join("store/shards")).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            out.push((f.file_name().to_string_lossy().to_string(), f.path()));
        }
    }
    out
}

/// Lowest healthy count of any segment of any object, as the SPN sees it.
fn lowest(s: &spn::Spn) -> u64 {
    s.durability(None).expect("report").objects.iter().map(|o| o.lowest_healthy).min().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_silently_deletes_a_shard_is_caught_by_an_audit_and_the_shard_rebuilt_elsewhere() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = start(root.path(), vec![PeerSpec::honest(); 8], quick(3600, Some(200))).await;
    let s = spn_of(&net);
    let bytes = image(3 << 20, 11);
    let res = publish(&net, root.path(), &bytes, 4, 2).await;
    // A peer holding something loses one shard behind its own back: the
    // file goes, the store's index still lists it.
    let (victim, (cid, path)) = net
        .peers
        .iter()
        .enumerate()
        .find_map(|(i, p)| stored(&p.dir).into_iter().next().map(|f| (i, f)))
        .expect("some peer holds a shard");
    std::fs::remove_file(&path).expect("delete the shard file");
    let victim_id = net.peers[victim].peer_id().to_string();
    let failed = || s.peers().expect("peers").into_iter().find(|p| p.peer == victim_id).map_or(0, |p| p.audits_failed);
    let mut rounds = 0;
    while failed() == 0 {
        rounds += 1;
        assert!(rounds <= 20, "no audit caught the lost shard in 20 rounds");
        s.audit_now().await.expect("audit");
    }
    println!("the lost shard was caught in {rounds} audit round(s)");
    assert!(!holders_of(s, &res.manifest, &cid).contains(&victim_id), "the victim no longer counts as holding it");
    s.repair_now().await.expect("repair");
    let now_held = holders_of(s, &res.manifest, &cid);
    assert_eq!(now_held.len(), 1, "rebuilt onto exactly one new peer: {now_held:?}");
    assert_ne!(now_held[0], victim_id);
    let report = s.durability(Some(&res.manifest)).expect("report");
    assert_eq!(report.objects[0].lowest_healthy, 6, "every segment whole again");
    assert_eq!(report.shards_repaired, 1);
    assert!(report.objects[0].placement_version >= 1);
    // The victim's peer record says what happened, and the object reads back.
    let p = s.peers().expect("peers").into_iter().find(|p| p.peer == victim_id).expect("victim's record");
    assert_eq!(p.audits_failed, 1);
    assert!(p.disqualified.is_none(), "one lost shard is not yet a disqualification");
    assert_eq!(read_back(s, &net.boot_addr, &res, &root.path().join("back")).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_audits_with_garbage_is_disqualified_and_its_shards_rebuilt() {
    let root = tempfile::tempdir().expect("tempdir");
    // Six peers for 4+2: every one, the liar too, holds a shard of every segment.
    let mut peers = vec![PeerSpec::honest(); 6];
    peers[0].answers = Arc::new(Liar);
    let net = start(root.path(), peers, quick(3600, None)).await;
    let s = spn_of(&net);
    let liar = net.peers[0].peer_id().to_string();
    let bytes = image(24 << 20, 12);
    let res = publish(&net, root.path(), &bytes, 4, 2).await;
    let held = s.segment_holders(&res.manifest).expect("holders").concat().iter().filter(|h| h.contains(&liar)).count();
    assert!(held >= 3, "the liar holds {held} shard(s); the test needs 3");
    // Two spare peers, in homes of their own, to repair onto.
    let spn_id = net.spn.as_ref().expect("spn").node.peer_id();
    let mut spares = Vec::new();
    for i in 0..2 {
        let dir = root.path().join(format!("spare{i}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let ip = harness::household(50 + i);
        let node = start_node(
            Role::Peer,
            Some(ip),
            vec![net.boot_addr.clone()],
            vec![spn_id],
            Some((&dir, 1 << 30)),
            Arc::new(net::Honest),
            Keypair::generate_ed25519(),
        )
        .await
        .expect("spare");
        spares.push(node);
    }
    // Found at the DHT's next refresh (every 30 s).
    net.wait_spn_peers(8, Duration::from_secs(45)).await.expect("the SPN sees the spares");
    s.audit_now().await.expect("audit");
    let p = s.peers().expect("peers").into_iter().find(|p| p.peer == liar).expect("liar's record");
    let why = p.disqualified.clone().expect("the liar is disqualified");
    assert!(why.contains("audit"), "{why}");
    assert_eq!(p.status, "disqualified");
    // Honest peers passed.
    assert!(s.peers().expect("peers").iter().filter(|p| p.peer != liar).all(|p| p.audits_failed == 0));
    s.repair_now().await.expect("repair");
    let holders = s.segment_holders(&res.manifest).expect("holders");
    assert!(holders.concat().iter().all(|h| !h.contains(&liar)), "nothing counts as held by the liar");
    assert_eq!(s.durability(Some(&res.manifest)).expect("report").objects[0].lowest_healthy, 6);
    // It gets nothing new.
    let more = publish(&net, root.path(), &image(2 << 20, 13), 4, 2).await;
    assert!(s.segment_holders(&more.manifest).expect("holders").concat().iter().all(|h| !h.contains(&liar)));
    assert_eq!(read_back(s, &net.boot_addr, &res, &root.path().join("back")).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_of_three_peers_behind_one_address_never_gets_more_than_m_shards_of_a_segment() {
    let root = tempfile::tempdir().expect("tempdir");
    let home = Ipv4Addr::new(127, 0, 0, 200);
    let mut peers = vec![PeerSpec::honest(); 9];
    for p in peers.iter_mut().take(3) {
        p.address = Some(home);
        // They claim the most room, to tempt placement.
        p.capacity = 64 << 30;
    }
    let net = start(root.path(), peers, quick(3600, None)).await;
    let s = spn_of(&net);
    let housemates: HashSet<String> = net.peers.iter().take(3).map(|p| p.peer_id().to_string()).collect();
    for seed in 0..3 {
        let res = publish(&net, root.path(), &image(4 << 20, 20 + seed), 4, 2).await;
        for (i, seg) in s.segment_holders(&res.manifest).expect("holders").iter().enumerate() {
            let in_home = seg.iter().filter(|h| h.iter().any(|p| housemates.contains(p))).count();
            assert!(in_home <= 2, "segment {i} has {in_home} shards in one household: {seg:?}");
        }
    }
    // The SPN saw them at one address, not where they claim to be.
    let seen: HashSet<String> =
        s.peers().expect("peers").into_iter().filter(|p| housemates.contains(&p.peer)).map(|p| p.address).collect();
    assert_eq!(seen, [home.to_string()].into_iter().collect());
    // With m = 1 and only 7 households, 8 shards cannot be spread: refused, clearly.
    let path = root.path().join("too-wide");
    std::fs::write(&path, image(1 << 20, 30)).expect("write");
    let e = s.publish_file(&path, "acme", "backup", 7, 1).await.expect_err("too few households");
    assert!(e.to_string().contains("--relax-domains"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_does_not_delay_a_publish_beyond_the_long_tail_cut() {
    // Its receipts take longer than a put may (31 s for these shards):
    // without the cut, every segment given to it waits that long and retries.
    let root = tempfile::tempdir().expect("tempdir");
    let mut peers = vec![PeerSpec::honest(); 10];
    peers[0].answers = Arc::new(common::SlowReceipts(Duration::from_secs(120)));
    let net = start(root.path(), peers, quick(3600, None)).await;
    let s = spn_of(&net);
    let slow = net.peers[0].peer_id().to_string();
    // Six segments of 6+2 on 10 peers: the slow one is offered shards in
    // all but (2/10)^6 of runs.
    let bytes = image(48 << 20, 41);
    let path = root.path().join("object");
    std::fs::write(&path, &bytes).expect("write");
    let began = Instant::now();
    let res = s.publish_file(&path, "acme", "backup", 6, 2).await.expect("publish");
    let took = began.elapsed();
    println!("publish of 48 MiB with one slow peer: {took:.1?}");
    assert!(took < Duration::from_secs(30), "the publish waited for the slow peer: {took:?}");
    let (_, placement) = s.object_placement(&res.manifest).expect("placement");
    assert!(!placement.peers.contains(&slow), "the outrun peer's receipts do not count");
    // What it stored anyway is deleted: no leaked shards.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !stored(&net.peers[0].dir).is_empty() {
        assert!(Instant::now() < deadline, "the slow peer still holds surplus shards after 90 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let out = root.path().join("read-back");
    assert_eq!(read_back(s, &net.boot_addr, &res, &out).await, bytes, "the object reads back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_more_than_m_holders_of_a_segment_is_reported_as_unreadable_not_hidden() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut net = start(root.path(), vec![PeerSpec::honest(); 6], quick(3, None)).await;
    let res = publish(&net, root.path(), &image(2 << 20, 51), 4, 2).await;
    let seg = spn_of(&net).segment_holders(&res.manifest).expect("holders").remove(0).concat();
    // m + 1 = 3 of its holders leave for good: beyond what the coding survives.
    for _ in 0..3 {
        let i = net.peers.iter().position(|p| seg.contains(&p.peer_id().to_string())).expect("a holder");
        net.peers.remove(i).stop().await;
    }
    let s = spn_of(&net);
    let deadline = Instant::now() + Duration::from_secs(60);
    let o = loop {
        s.repair_now().await.expect("a repair pass runs");
        let o = s.durability(Some(&res.manifest)).expect("report").objects.remove(0);
        if o.lowest_healthy < 4 {
            break o;
        }
        assert!(Instant::now() < deadline, "the loss was not seen in 60 s: {o:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!((o.lowest_healthy, o.unreadable, o.at_risk), (3, 1, 1), "{o:?}");
    let d = s.durability(None).expect("report");
    assert_eq!(d.peers_lost, 3);
    assert_eq!(d.shards_repaired, 0, "nothing can be rebuilt from 3 of 4 shards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retiring_peer_hands_its_shards_over_before_it_leaves() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = start(root.path(), vec![PeerSpec::honest(); 9], quick(3600, None)).await;
    let s = spn_of(&net);
    let bytes = image(12 << 20, 61);
    let res = publish(&net, root.path(), &bytes, 4, 2).await;
    let (i, held) =
        net.peers.iter().enumerate().map(|(i, p)| (i, stored(&p.dir).len())).max_by_key(|(_, n)| *n).expect("peers");
    assert!(held > 0, "no peer holds a shard");
    let retiring = net.peers[i].peer_id().to_string();
    // What `ionshard node retire` does: the node's directory gets the mark.
    std::fs::write(net.peers[i].dir.join("retiring"), "{}").expect("mark");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        s.repair_now().await.expect("repair");
        let rec = s.peers().expect("peers").into_iter().find(|p| p.peer == retiring).expect("its record");
        if stored(&net.peers[i].dir).is_empty() && rec.status == "retired" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} shard file(s) after 90 s: {rec:?}",
            stored(&net.peers[i].dir).len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Moved, not lost: every segment whole without it, each of its shards rebuilt once.
    let d = s.durability(Some(&res.manifest)).expect("report");
    assert_eq!(d.objects[0].lowest_healthy, 6, "{d:?}");
    assert_eq!(d.shards_repaired, held as u64);
    assert!(s.segment_holders(&res.manifest).expect("holders").concat().iter().all(|h| !h.contains(&retiring)));
    // It gets nothing new.
    let more = publish(&net, root.path(), &image(2 << 20, 62), 4, 2).await;
    assert!(s.segment_holders(&more.manifest).expect("holders").concat().iter().all(|h| !h.contains(&retiring)));
    assert_eq!(read_back(s, &net.boot_addr, &res, &root.path().join("back")).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_peer_holding_many_shards_passes_its_audits() {
    // Found by the durability bench: an audit sent every shard's request at
    // once, more than the 8 a peer serves for one asker; the rest came back
    // Busy and failed the audit (3 such failures disqualify a peer).
    let root = tempfile::tempdir().expect("tempdir");
    let net = start(root.path(), vec![PeerSpec::honest(); 6], quick(3600, None)).await;
    let s = spn_of(&net);
    // Ten segments of 4+2 on six peers: every peer holds ten shards.
    publish(&net, root.path(), &image(80 << 20, 81), 4, 2).await;
    for _ in 0..2 {
        assert_eq!(s.audit_now().await.expect("audit"), 0, "an honest peer failed its audit");
    }
    for p in s.peers().expect("peers") {
        assert_eq!((p.audits_failed, p.disqualified.clone()), (0, None), "{p:?}");
        assert!(p.audits_passed >= 2, "{p:?}");
    }
}

/// The test's own view of the truth: per segment, shards held by a peer that runs now.
fn true_minimum(s: &spn::Spn, objects: &[spn::JobResult], up: &HashSet<String>) -> usize {
    let mut min = usize::MAX;
    for o in objects {
        for seg in s.segment_holders(&o.manifest).expect("holders") {
            let ok = seg.iter().filter(|h| h.iter().any(|p| up.contains(p))).count();
            min = min.min(ok);
        }
    }
    min
}

struct Churner {
    boot: Vec<net::Multiaddr>,
    spn_id: PeerId,
    root: PathBuf,
    /// Running nodes by peer id, and the keys and dirs of stopped ones.
    running: HashMap<String, (Node, Keypair, Ipv4Addr)>,
    stopped: HashMap<String, (Keypair, PathBuf, Ipv4Addr)>,
    next_home: usize,
}

impl Churner {
    async fn start(&mut self, key: Keypair, dir: PathBuf, ip: Ipv4Addr) {
        let node = start_node(
            Role::Peer,
            Some(ip),
            self.boot.clone(),
            vec![self.spn_id],
            Some((&dir, 1 << 30)),
            Arc::new(net::Honest),
            key.clone(),
        )
        .await
        .expect("peer starts");
        self.running.insert(node.peer_id().to_string(), (node, key, ip));
    }

    async fn stop(&mut self, id: &str) {
        if let Some((node, key, ip)) = self.running.remove(id) {
            let dir = node.dir.clone();
            node.stop().await;
            self.stopped.insert(id.to_string(), (key, dir, ip));
        }
    }

    async fn replace(&mut self) {
        self.next_home += 1;
        let ip = harness::household(self.next_home);
        let dir = self.root.join(format!("new{}", self.next_home));
        std::fs::create_dir_all(&dir).expect("dir");
        self.start(Keypair::generate_ed25519(), dir, ip).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_churn_no_segment_falls_below_k_and_every_object_reads_back() {
    // The chosen default for backups and releases, 10+6 (see docs/durability.md), on n + 8 peers.
    let (k, m) = (10u8, 6u8);
    let n = usize::from(k + m);
    let root = tempfile::tempdir().expect("tempdir");
    let peers: Vec<PeerSpec> =
        (0..n + 8).map(|_| PeerSpec { key: Some(Keypair::generate_ed25519()), ..PeerSpec::honest() }).collect();
    let keys: Vec<Keypair> = peers.iter().map(|p| p.key.clone().expect("key")).collect();
    let net = start(root.path(), peers, quick(4, None)).await;
    let mut objects = Vec::new();
    let mut originals = Vec::new();
    for i in 0..3 {
        let bytes = image(3 << 20, 40 + i);
        objects.push(publish(&net, root.path(), &bytes, k, m).await);
        originals.push(bytes);
    }
    let Network { bootstrap, boot_addr, peers: nodes, spn: spn_node, .. } = net;
    let spn_node = spn_node.expect("spn");
    let mut ch = Churner {
        boot: vec![boot_addr.clone()],
        spn_id: spn_node.node.peer_id(),
        root: root.path().to_path_buf(),
        running: HashMap::new(),
        stopped: HashMap::new(),
        next_home: n + 8 + 1,
    };
    for (node, key) in nodes.into_iter().zip(keys) {
        let ip = harness::household(ch.running.len() + 1);
        ch.running.insert(node.peer_id().to_string(), (node, key, ip));
    }
    let s = &spn_node.spn;
    let up = |ch: &Churner| ch.running.keys().cloned().collect::<HashSet<String>>();
    let mut min_seen = true_minimum(s, &objects, &up(&ch));
    let mut gone_for_good = 0;
    let started = Instant::now();
    let mut rng_state = 7u64;
    let mut rand = move |n: usize| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        (rng_state % n as u64) as usize
    };
    // 40 steps of 1.5 s: about a minute of churn, bounded in count and time.
    for step in 0..40 {
        if started.elapsed() > Duration::from_secs(240) {
            break;
        }
        // Never more than m/2 holders down at once, counting peers gone for
        // good whose shards are not rebuilt yet: repair, not luck, is what
        // lets the churn go on.
        let running = up(&ch);
        let down = objects
            .iter()
            .flat_map(|o| s.segment_holders(&o.manifest).expect("holders").concat().concat())
            .filter(|p| !running.contains(p))
            .collect::<HashSet<String>>()
            .len();
        let action = rand(3);
        if action == 0 && down < usize::from(m) / 2 {
            let ids: Vec<String> = ch.running.keys().cloned().collect();
            let id = ids[rand(ids.len())].clone();
            ch.stop(&id).await;
        } else if action == 1 && !ch.stopped.is_empty() {
            let ids: Vec<String> = ch.stopped.keys().cloned().collect();
            let id = ids[rand(ids.len())].clone();
            if rand(2) == 0 {
                // Back with its store.
                let (key, dir, ip) = ch.stopped.remove(&id).expect("stopped");
                ch.start(key, dir, ip).await;
            } else {
                // Gone for good; a new peer in a new home takes its place.
                ch.stopped.remove(&id);
                gone_for_good += 1;
                ch.replace().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now_min = true_minimum(s, &objects, &up(&ch));
        min_seen = min_seen.min(now_min);
        assert!(now_min >= usize::from(k), "step {step}: a segment fell to {now_min} live shards (below k = {k})");
    }
    // Let repair catch up: no segment at risk, as the SPN and the truth see it.
    let (threshold, _) = spn::Settings::default().thresholds(k, m);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let truth = true_minimum(s, &objects, &up(&ch));
        let at_risk: u64 = s.durability(None).expect("report").objects.iter().map(|o| o.at_risk).sum();
        if truth > usize::from(threshold) && at_risk == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not repaired after 120 s: truth {truth}, SPN {}", lowest(s));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = s.durability(None).expect("report");
    let lost_bytes = report.bytes_lost.max(1);
    println!(
        "churn: {gone_for_good} peer(s) gone for good, lowest live shards of any segment {min_seen} (k {k}, n {n}); \
         {} shard(s) repaired, {} repair bytes for {} bytes lost ({:.1} repair bytes per byte lost)",
        report.shards_repaired,
        report.repair_bytes,
        report.bytes_lost,
        report.repair_bytes as f64 / lost_bytes as f64
    );
    for (i, o) in objects.iter().enumerate() {
        let back = read_back(s, &boot_addr, o, &root.path().join(format!("back{i}"))).await;
        assert!(back == originals[i], "object {i} differs after the churn");
    }
    for (_, (node, _, _)) in ch.running.drain() {
        node.stop().await;
    }
    bootstrap.stop().await;
}
