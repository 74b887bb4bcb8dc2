//! The drive's web page in a real browser: headless Chromium driven over
//! WebDriver (chromedriver) against `ionshard drive serve` on a drive of
//! three device processes. It logs in, uploads a tree (a folder and
//! several files), browses it, previews an image and a text, downloads a
//! file byte-exact, deletes one and restores it from the trash, and
//! saves screenshots at desktop and phone sizes. The second test attacks
//! it by plain HTTP: a change without the CSRF token, DNS rebinding, names
//! that climb out or hold NUL, oversized uploads, a stored HTML file read
//! through the page and through WebDAV, an expired session, and `--lan`'s
//! TLS pinned to the printed fingerprint.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::drive::*;
use common::{Procs, s};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

/// A free port on loopback (for chromedriver, which wants one named).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One HTTP/1.1 request; (status, headers lowercased, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut st = std::net::TcpStream::connect(addr).expect("connect");
    st.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    // The Host the node is reached at, unless the caller names another.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    st.write_all(req.as_bytes()).expect("head");
    // A server that refuses early (413) may close before the body is in.
    let _ = st.write_all(body);
    let mut raw = Vec::new();
    let _ = st.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let mut body = raw[split + 4..].to_vec();
    if hs.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = unchunk(&body);
    }
    (status, hs, body)
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

fn header<'a>(hs: &'a [(String, String)], k: &str) -> &'a str {
    hs.iter().find(|(x, _)| x == k).map_or("", |(_, v)| v.as_str())
}

/// Log in by the form; the session cookie (`name=value`).
fn login(addr: &str) -> String {
    let body = format!("password={}", PASSWORD.replace(' ', "+"));
    let (status, hs, _) =
        http(addr, "POST", "/login", &[("Content-Type", "application/x-www-form-urlencoded")], body.as_bytes());
    assert_eq!(status, 303, "login");
    let c = header(&hs, "set-cookie");
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"), "the session cookie: {c}");
    c.split(';').next().expect("cookie").to_string()
}

/// The CSRF token a page carries.
fn csrf_of(addr: &str, cookie: &str) -> String {
    let (status, _, body) = http(addr, "GET", "/files/", &[("Cookie", cookie)], b"");
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&body);
    let at = page.find("data-csrf=\"").expect("a token on the page") + 11;
    page[at..at + page[at..].find('"').expect("end")].to_string()
}

/// Poll `probe` (a JS expression) until it is true, within `secs`.
async fn until(c: &Client, probe: &str, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = c.execute(&format!("return !!({probe});"), vec![]).await.unwrap_or(Value::Bool(false));
        if v == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let text = c.execute("return document.body.innerText", vec![]).await.unwrap_or_default();
            panic!("{what}: not within {secs} s; the page says:\n{}", text.as_str().unwrap_or(""));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn png(w: u32, h: u32) -> Vec<u8> {
    // A real PNG: stored (uncompressed) deflate blocks, one row each.
    fn crc(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut both = kind.to_vec();
        both.extend_from_slice(data);
        out.extend_from_slice(&both);
        out.extend_from_slice(&crc(&both).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0);
        for x in 0..w {
            raw.extend_from_slice(&[(x * 4) as u8, (y * 5) as u8, 160]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let rows: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, part) in rows.iter().enumerate() {
        z.push(u8::from(i + 1 == rows.len()));
        z.extend_from_slice(&(part.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(part.len() as u16)).to_le_bytes());
        z.extend_from_slice(part);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", b"");
    out
}

/// Where the screenshots go: `docs/screenshots` when asked to renew them
/// (`IONSHARD_SCREENSHOTS=docs`), the test's directory otherwise.
fn shots_dir(dir: &Path) -> PathBuf {
    match std::env::var("IONSHARD_SCREENSHOTS").as_deref() {
        Ok("docs") => Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots"),
        _ => dir.join("shots"),
    }
}

#[test]
fn the_web_page_in_chromium_logs_in_uploads_a_tree_previews_downloads_and_restores_from_the_trash() {
    if skip_without(&["chromium", "chromedriver"], "chromium chromium-driver", "IONSHARD_REQUIRE_BROWSER") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::new(&dir.path().join("logs"));
    let (boot, laptop) = drive_of_three(&mut procs, dir.path());
    let (child, first) = serve(dir.path(), &laptop, &boot, "serve", &["--max-upload", "64MiB"]);
    procs.children.push(("drive-serve".into(), child));
    let url = first["url"].as_str().expect("url").trim_end_matches('/').to_string();
    // A friend of the laptop (paired as by `drive pair --friend`), offline.
    let sam = id_of(&dir.path().join("sam"));
    let pairs_file = laptop.join("drive/pairs.json");
    let mut pairs: Value = serde_json::from_slice(&std::fs::read(&pairs_file).expect("pairs")).expect("json");
    pairs["pairs"]
        .as_array_mut()
        .expect("pairs")
        .push(json!({ "peer": sam, "name": "sam", "role": "friend", "paired_at": 1 }));
    pairs["friend_keys"] = json!({ sam.clone(): "07".repeat(32) });
    std::fs::write(&pairs_file, serde_json::to_vec(&pairs).expect("json")).expect("write pairs");

    // What the browser uploads: a folder with a subfolder, and loose files.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
    let big = common::image(9 << 20, 41);
    std::fs::write(tree.join("big.bin"), &big).expect("write");
    std::fs::write(tree.join("readme.txt"), "hello from the browser <b>not bold</b>\n").expect("write");
    std::fs::write(tree.join("sub/pic.png"), png(64, 48)).expect("write");
    std::fs::write(tree.join("sub/deep.txt"), "deep down\n").expect("write");
    let loose = dir.path().join("loose");
    std::fs::create_dir_all(&loose).expect("mkdir");
    std::fs::write(loose.join("one.txt"), "one\n").expect("write");
    std::fs::write(loose.join("two.txt"), "two\n").expect("write");
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).expect("mkdir");

    let port = free_port();
    let driver = std::process::Command::new("chromedriver")
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(std::fs::File::create(dir.path().join("logs/chromedriver.log")).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver");
    procs.children.push(("chromedriver".into(), driver));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    let shots = shots_dir(dir.path());
    std::fs::create_dir_all(&shots).expect("screenshots");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--no-first-run", "--window-size=1280,800",
                         format!("--user-data-dir={}", s(&dir.path().join("chromium")))],
                "prefs": { "download.default_directory": s(&downloads), "download.prompt_for_download": false },
            }),
        );
        let c = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a browser session");

        // Logged out, the page sends the browser to the login.
        c.goto(&format!("{url}/files/")).await.expect("goto");
        until(&c, "location.pathname == '/login'", 20, "the login page").await;
        let pw = c.find(Locator::Id("password")).await.expect("password field");
        pw.send_keys("not the password").await.expect("type");
        c.find(Locator::Id("login")).await.expect("button").click().await.expect("click");
        until(&c, "document.body.innerText.includes(\"not the drive's password\")", 20, "a wrong password").await;
        let pw = c.find(Locator::Id("password")).await.expect("password field");
        pw.send_keys(PASSWORD).await.expect("type");
        c.find(Locator::Id("login")).await.expect("button").click().await.expect("click");
        until(&c, "location.pathname == '/files/'", 30, "the drive after login").await;
        let png_shot = c.screenshot().await.expect("screenshot");
        std::fs::write(shots.join("drive-login-desktop.png"), png_shot).expect("save");

        // Upload: a whole folder, then two loose files at once.
        c.find(Locator::Id("pick-folder")).await.expect("folder input").send_keys(&s(&tree)).await.expect("folder");
        until(&c, "document.querySelector('a[data-name=\"tree\"]')", 120, "the uploaded folder listed").await;
        let files_in = format!("{}\n{}", s(&loose.join("one.txt")), s(&loose.join("two.txt")));
        c.find(Locator::Id("pick-files")).await.expect("files input").send_keys(&files_in).await.expect("files");
        until(&c, "document.querySelector('a[data-name=\"two.txt\"]') && document.querySelector('a[data-name=\"one.txt\"]')", 120, "the loose files listed").await;
        // A new folder by the form.
        c.find(Locator::Id("folder-name")).await.expect("name").send_keys("made here").await.expect("type");
        c.find(Locator::Id("make-folder")).await.expect("make").click().await.expect("click");
        until(&c, "document.querySelector('a[data-name=\"made here\"]')", 30, "the new folder listed").await;
        std::fs::write(shots.join("drive-files-desktop.png"), c.screenshot().await.expect("shot")).expect("save");

        // Browse by clicking, into the tree and its subfolder.
        c.find(Locator::Css("a[data-name=\"tree\"]")).await.expect("tree").click().await.expect("click");
        until(&c, "location.pathname == '/files/tree' && document.querySelector('a[data-name=\"big.bin\"]') && document.querySelector('a[data-name=\"readme.txt\"]')", 30, "the tree's listing").await;
        c.find(Locator::Css("a[data-name=\"sub\"]")).await.expect("sub").click().await.expect("click");
        until(&c, "document.querySelector('a[data-name=\"pic.png\"]') && document.querySelector('a[data-name=\"deep.txt\"]')", 30, "the subfolder's listing").await;

        // Preview an image: the browser decoded it (served as an image, not blocked).
        c.find(Locator::Css("a[data-name=\"pic.png\"]")).await.expect("pic").click().await.expect("click");
        until(&c, "document.getElementById('preview') && document.getElementById('preview').naturalWidth == 64 && document.getElementById('preview').naturalHeight == 48", 60, "the image preview").await;
        std::fs::write(shots.join("drive-preview-desktop.png"), c.screenshot().await.expect("shot")).expect("save");

        // A text previewed as text: its markup shown, not run.
        c.goto(&format!("{url}/files/tree/readme.txt")).await.expect("goto");
        until(&c, "document.getElementById('preview') && document.getElementById('preview').innerText.includes('<b>not bold</b>')", 60, "the text preview").await;

        // Download byte-exact.
        c.goto(&format!("{url}/files/tree/big.bin")).await.expect("goto");
        c.find(Locator::Id("download")).await.expect("download").click().await.expect("click");
        let got = downloads.join("big.bin");
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0) != big.len() as u64 {
            assert!(Instant::now() < deadline, "the download did not finish in 120 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(std::fs::read(&got).expect("downloaded") == big, "the download is byte-exact");

        // Delete a file, then restore it from the trash.
        c.goto(&format!("{url}/files/tree/sub/deep.txt")).await.expect("goto");
        c.find(Locator::Css("button[data-delete=\"deep.txt\"]")).await.expect("delete").click().await.expect("click");
        until(&c, "!document.querySelector('a[data-name=\"deep.txt\"]') && document.querySelector('a[data-name=\"pic.png\"]')", 30, "the listing without the deleted file").await;
        c.find(Locator::Css("a[href=\"/trash\"]")).await.expect("trash link").click().await.expect("click");
        until(&c, "document.querySelector('button[data-restore=\"/tree/sub/deep.txt\"]')", 30, "the file in the trash").await;
        std::fs::write(shots.join("drive-trash-desktop.png"), c.screenshot().await.expect("shot")).expect("save");
        c.find(Locator::Css("button[data-restore=\"/tree/sub/deep.txt\"]")).await.expect("restore").click().await.expect("click");
        until(&c, "document.body.innerText.includes('Restored /tree/sub/deep.txt')", 30, "the restore said").await;
        c.goto(&format!("{url}/files/tree/sub/deep.txt")).await.expect("goto");
        until(&c, "document.getElementById('preview') && document.getElementById('preview').innerText.includes('deep down')", 60, "the restored file").await;

        // The devices that hold the drive, and their health.
        c.goto(&format!("{url}/devices")).await.expect("goto");
        until(&c, "document.querySelectorAll('.devices li.up').length == 3", 30, "three devices online").await;

        // A message to a friend (offline: the laptop's devices hold it).
        c.goto(&format!("{url}/letters")).await.expect("goto");
        c.find(Locator::Id("message")).await.expect("message").send_keys("See you on Sunday!").await.expect("type");
        c.find(Locator::Id("send")).await.expect("send").click().await.expect("click");
        until(&c, "document.querySelector('.letters li.out') && document.querySelector('.letters li.out').innerText.includes('See you on Sunday!')", 30, "the message listed").await;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            c.goto(&format!("{url}/letters")).await.expect("goto");
            let held = "return document.querySelector('.letters li.out').innerText.includes('held by')";
            if c.execute(held, vec![]).await.expect("probe") == Value::Bool(true) {
                break;
            }
            assert!(Instant::now() < deadline, "the message was not held by the devices within 120 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::fs::write(shots.join("drive-messages-desktop.png"), c.screenshot().await.expect("shot")).expect("save");

        // A phone-sized window.
        c.set_window_size(390, 844).await.expect("resize");
        c.goto(&format!("{url}/files/tree")).await.expect("goto");
        until(&c, "document.querySelector('a[data-name=\"big.bin\"]')", 30, "the listing on a phone").await;
        let wide = c.execute("return document.documentElement.scrollWidth", vec![]).await.expect("width");
        assert!(wide.as_u64().unwrap_or(9999) <= 390, "nothing wider than a phone's window: {wide}");
        std::fs::write(shots.join("drive-files-phone.png"), c.screenshot().await.expect("shot")).expect("save");
        c.goto(&format!("{url}/files/tree/sub/pic.png")).await.expect("goto");
        until(&c, "document.getElementById('preview') && document.getElementById('preview').naturalWidth == 64", 30, "the preview on a phone").await;
        std::fs::write(shots.join("drive-preview-phone.png"), c.screenshot().await.expect("shot")).expect("save");

        // Log out: the page is closed again.
        c.set_window_size(1280, 800).await.expect("resize");
        c.goto(&format!("{url}/files/")).await.expect("goto");
        c.find(Locator::Css("form[action=\"/logout\"] button")).await.expect("logout").click().await.expect("click");
        until(&c, "location.pathname == '/login' && document.body.innerText.includes('logged out')", 30, "logged out").await;
        c.goto(&format!("{url}/files/tree")).await.expect("goto");
        until(&c, "location.pathname == '/login'", 30, "logged out stays out").await;
        c.close().await.expect("close the browser");
    });

    // The CLI reads what the browser uploaded, byte for byte.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = drive(&laptop, &boot, &["ls", "-r", "/"]);
        let out = String::from_utf8_lossy(&o.stdout);
        if out.contains("/tree/sub/deep.txt") && out.contains("/two.txt") {
            break;
        }
        assert!(Instant::now() < deadline, "the CLI never saw the page's uploads: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let back = dir.path().join("back");
    common::json_out(&drive(&laptop, &boot, &["get", "/tree", &s(&back)]), "drive get");
    assert_eq!(files(&back), files(&tree), "the CLI reads the tree the browser uploaded, byte for byte");

    drop(procs);
}

/// Upload `bytes` as `dir/name` through the page's upload API.
fn upload(addr: &str, cookie: &str, token: &str, dir: &str, name: &str, bytes: &[u8]) {
    let api = [("Cookie", cookie), ("Content-Type", "application/json"), ("X-CSRF-Token", token)];
    let body = json!({ "dir": dir, "name": name, "size": bytes.len() }).to_string();
    let (status, _, answer) = http(addr, "POST", "/up", &api, body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let id = serde_json::from_slice::<Value>(&answer).expect("json")["id"].as_str().expect("id").to_string();
    let put = [("Cookie", cookie), ("X-CSRF-Token", token)];
    for (i, part) in bytes.chunks(4 << 20).enumerate() {
        let (status, _, answer) = http(addr, "PUT", &format!("/up/{id}?offset={}", i * (4 << 20)), &put, part);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }
    let (status, _, answer) = http(addr, "POST", &format!("/up/{id}/done"), &put, b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn csrf_dns_rebinding_names_that_climb_out_oversized_uploads_stored_html_and_expired_sessions_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::new(&dir.path().join("logs"));
    let (boot, laptop) = drive_of_three(&mut procs, dir.path());
    let (child, first) = serve(dir.path(), &laptop, &boot, "serve", &["--max-upload", "64MiB"]);
    procs.children.push(("drive-serve".into(), child));
    let addr = first["url"].as_str().expect("url").trim_start_matches("http://").trim_end_matches('/').to_string();
    let cookie = login(&addr);
    let token = csrf_of(&addr, &cookie);
    let big = common::image(9 << 20, 41);
    upload(&addr, &cookie, &token, "/tree", "big.bin", &big);
    upload(&addr, &cookie, &token, "/", "two.txt", b"two\n");

    let form = [("Cookie", cookie.as_str()), ("Content-Type", "application/x-www-form-urlencoded")];
    // A change without the token, or with another, is refused; nothing made.
    for body in ["path=%2F&name=forged", "path=%2F&name=forged&csrf=0000"] {
        let (status, _, text) = http(&addr, "POST", "/do/mkdir", &form, body.as_bytes());
        assert_eq!(status, 403, "a change without the token: {}", String::from_utf8_lossy(&text));
        assert!(String::from_utf8_lossy(&text).contains("CSRF token"), "{}", String::from_utf8_lossy(&text));
    }
    let (_, _, listing) = http(&addr, "GET", "/files/", &[("Cookie", &cookie)], b"");
    assert!(!String::from_utf8_lossy(&listing).contains("forged"), "no folder was made without the token");
    // Names that climb out or hold NUL.
    let api = [("Cookie", cookie.as_str()), ("Content-Type", "application/json"), ("X-CSRF-Token", token.as_str())];
    for (name, needle) in [("../escape.txt", "path"), ("a/../../b.txt", "path"), ("nul\u{0}.txt", "NUL")] {
        let body = json!({ "dir": "/", "name": name, "size": 3 }).to_string();
        let (status, _, text) = http(&addr, "POST", "/up", &api, body.as_bytes());
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 400, "{name:?}: {text}");
        assert!(text.contains(needle), "{name:?}: {text}");
    }
    let body = format!("path=%2F&name=..&csrf={token}");
    let (status, hs, _) = http(&addr, "POST", "/do/mkdir", &form, body.as_bytes());
    assert_eq!(status, 303, "a bad name is said on the page it goes back to");
    let (_, _, page) = http(&addr, "GET", header(&hs, "location"), &[("Cookie", &cookie)], b"");
    assert!(String::from_utf8_lossy(&page).contains("flash bad"), "the refusal is shown");
    // Oversized: past --max-upload, a part past the size given, a part too big.
    let body = json!({ "dir": "/", "name": "huge.bin", "size": 65u64 << 20 }).to_string();
    let (status, _, text) = http(&addr, "POST", "/up", &api, body.as_bytes());
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("64.0 MiB"), "the limit is said: {text}");
    let body = json!({ "dir": "/", "name": "small.bin", "size": 4 }).to_string();
    let (status, _, text) = http(&addr, "POST", "/up", &api, body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&text));
    let id = serde_json::from_slice::<Value>(&text).expect("json")["id"].as_str().expect("id").to_string();
    let put = [("Cookie", cookie.as_str()), ("X-CSRF-Token", token.as_str())];
    let (status, _, text) = http(&addr, "PUT", &format!("/up/{id}?offset=0"), &put, b"too long");
    assert_eq!(status, 400, "past the size given: {}", String::from_utf8_lossy(&text));
    let (status, _, _) = http(&addr, "PUT", &format!("/up/{id}?offset=0"), &put, &vec![0u8; 9 << 20]);
    assert_eq!(status, 413, "a part over 8 MiB");
    let (status, _, text) = http(&addr, "POST", &format!("/up/{id}/done"), &put, b"");
    assert_eq!(status, 409, "done before the bytes: {}", String::from_utf8_lossy(&text));
    // A stored HTML file is served as text, sandboxed, never as a page.
    let body = json!({ "dir": "/", "name": "evil.html", "size": 31 }).to_string();
    let (_, _, text) = http(&addr, "POST", "/up", &api, body.as_bytes());
    let id = serde_json::from_slice::<Value>(&text).expect("json")["id"].as_str().expect("id").to_string();
    let evil = b"<script>alert('owned')</script>";
    assert_eq!(http(&addr, "PUT", &format!("/up/{id}?offset=0"), &put, evil).0, 200);
    assert_eq!(http(&addr, "POST", &format!("/up/{id}/done"), &put, b"").0, 200);
    let (status, hs, body) = http(&addr, "GET", "/raw/evil.html", &[("Cookie", &cookie)], b"");
    assert_eq!((status, body.as_slice()), (200, &evil[..]));
    assert!(header(&hs, "content-type").starts_with("text/plain"), "{hs:?}");
    assert_eq!(header(&hs, "x-content-type-options"), "nosniff");
    assert!(header(&hs, "content-security-policy").starts_with("sandbox"), "{hs:?}");
    // Ranges.
    let (status, hs, body) =
        http(&addr, "GET", "/raw/tree/big.bin", &[("Cookie", &cookie), ("Range", "bytes=100-199")], b"");
    assert_eq!((status, body.as_slice()), (206, &big[100..200]));
    assert_eq!(header(&hs, "content-range"), format!("bytes 100-199/{}", big.len()));
    // Nothing without a session.
    let (status, hs, _) = http(&addr, "GET", "/raw/tree/big.bin", &[], b"");
    assert_eq!((status, header(&hs, "location")), (303, "/login?why=login"));
    // The same file read over WebDAV in a browser is sandboxed too (it
    // shares the page's origin).
    let basic = format!("Basic {}", data_encoding::BASE64.encode(format!("me:{PASSWORD}").as_bytes()));
    let (status, hs, body) = http(&addr, "GET", "/dav/evil.html", &[("Authorization", &basic)], b"");
    assert_eq!((status, body.as_slice()), (200, &evil[..]));
    assert!(
        header(&hs, "content-security-policy").starts_with("sandbox"),
        "webdav_serves_stored_html_as_a_page: {hs:?}"
    );
    assert_eq!(header(&hs, "x-content-type-options"), "nosniff");
    // DNS rebinding: a site that points its own name at 127.0.0.1 is refused.
    let port = addr.rsplit(':').next().expect("port");
    let (status, _, _) = http(&addr, "GET", "/login", &[("Host", &format!("evil.example:{port}"))], b"");
    assert_eq!(status, 421, "dns_rebinding: a request for another host name");
    // A login sent by another site's page (it could guess, and keep the line full).
    let guess = format!("password={}", PASSWORD.replace(' ', "+"));
    let cross = [("Content-Type", "application/x-www-form-urlencoded"), ("Origin", "http://evil.example")];
    let (status, _, _) = http(&addr, "POST", "/login", &cross, guess.as_bytes());
    assert_eq!(status, 403, "login_from_another_origin_is_refused");
    // A file where a folder would have to be: refused before any byte.
    let body = json!({ "dir": "/", "name": "two.txt/inside.txt", "size": 3 }).to_string();
    let (status, _, text) = http(&addr, "POST", "/up", &api, body.as_bytes());
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&text));
    // A range to the end of u64.
    let (status, _, body) =
        http(&addr, "GET", "/raw/tree/big.bin", &[("Cookie", &cookie), ("Range", "bytes=5-18446744073709551615")], b"");
    assert_eq!((status, body.len()), (206, big.len() - 5));
    // A version restored by its content, not by a position that moves.
    let mut hashes = Vec::new();
    for text in ["first\n", "second\n"] {
        upload(&addr, &cookie, &token, "/", "v.txt", text.as_bytes());
        hashes.push(blake3::hash(text.as_bytes()).to_hex().to_string());
    }
    let body = format!("path=%2Fv.txt&hash={}&csrf={token}", hashes[0]);
    assert_eq!(http(&addr, "POST", "/do/restore", &form, body.as_bytes()).0, 303);
    let (_, _, now) = http(&addr, "GET", "/raw/v.txt", &[("Cookie", &cookie)], b"");
    assert_eq!(now, b"first\n", "the version chosen by its hash is the newest again");

    // A share link: opened without a session, it reads what it names and
    // nothing else; revoked or expired, it opens no more.
    let share = |path: &str, life: u64| -> String {
        let body = format!("path={}&life={life}&csrf={token}", path.replace('/', "%2F"));
        let (status, hs, _) = http(&addr, "POST", "/do/share", &form, body.as_bytes());
        assert_eq!((status, header(&hs, "location")), (303, "/shares"));
        let (_, _, page) = http(&addr, "GET", "/shares", &[("Cookie", &cookie)], b"");
        let page = String::from_utf8_lossy(&page).into_owned();
        let at = page.find("/s/").expect("the new link shown once");
        page[at..at + page[at..].find('"').expect("end")].to_string()
    };
    let link = share("/tree", 3600);
    let (status, _, listing) = http(&addr, "GET", &link, &[], b"");
    assert_eq!(status, 200, "a link opens without a session");
    assert!(String::from_utf8_lossy(&listing).contains("big.bin"));
    let (status, hs, body) = http(&addr, "GET", &format!("{link}?p=big.bin&raw=1"), &[("Range", "bytes=10-19")], b"");
    assert_eq!((status, body.as_slice()), (206, &big[10..20]));
    assert!(header(&hs, "content-disposition").starts_with("attachment"), "{hs:?}");
    for outside in ["?p=..%2Ftwo.txt", "?p=%2F..%2Ftwo.txt&raw=1", "?p=..&raw=1"] {
        let (status, _, body) = http(&addr, "GET", &format!("{link}{outside}"), &[], b"");
        assert!(status >= 400 && body != b"two\n", "a_link_reads_outside_its_folder: {outside} gave {status}");
    }
    let (id, secret) = link.trim_start_matches("/s/").split_once('/').expect("id/token");
    let wrong = format!("/s/{id}/{}", "a".repeat(secret.len()));
    assert_eq!(http(&addr, "GET", &wrong, &[], b"").0, 404, "a guessed token opens nothing");
    let body = format!("id={id}&csrf={token}");
    assert_eq!(http(&addr, "POST", "/do/unshare", &form, body.as_bytes()).0, 303);
    let (status, _, text) = http(&addr, "GET", &link, &[], b"");
    assert_eq!(status, 410, "a revoked link: {}", String::from_utf8_lossy(&text));
    assert!(String::from_utf8_lossy(&text).contains("revoked"));
    let short = share("/two.txt", 1);
    assert_eq!(http(&addr, "GET", &short, &[], b"").0, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let (status, _, text) = http(&addr, "GET", &short, &[], b"");
    assert_eq!(status, 410, "an expired link");
    assert!(String::from_utf8_lossy(&text).contains("expired"));
    // A link names the file it was made for, not whatever later takes its
    // name: removed, and another put there, it opens no more.
    let named = share("/v.txt", 3600);
    assert_eq!(http(&addr, "GET", &named, &[], b"").0, 200);
    let body = format!("path=%2Fv.txt&csrf={token}");
    assert_eq!(http(&addr, "POST", "/do/delete", &form, body.as_bytes()).0, 303);
    upload(&addr, &cookie, &token, "/", "v.txt", b"someone else's\n");
    let (status, _, text) = http(&addr, "GET", &named, &[], b"");
    assert_eq!(status, 410, "a_link_opens_what_later_takes_the_name: {}", String::from_utf8_lossy(&text));
    // An expired session: a node whose sessions end after 2 s unused (the
    // first node stopped: one drive node per client directory).
    let pid = procs.pid("drive-serve");
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    std::thread::sleep(Duration::from_secs(2));
    let (child, first) = serve(dir.path(), &laptop, &boot, "serve-short", &["--session-idle-secs", "2"]);
    procs.children.push(("drive-serve-short".into(), child));
    let short = first["url"].as_str().expect("url").trim_start_matches("http://").trim_end_matches('/').to_string();
    let cookie = login(&short);
    assert_eq!(http(&short, "GET", "/files/", &[("Cookie", &cookie)], b"").0, 200);
    std::thread::sleep(Duration::from_secs(3));
    let (status, hs, _) = http(&short, "GET", "/files/", &[("Cookie", &cookie)], b"");
    assert_eq!((status, header(&hs, "location")), (303, "/login?why=expired"), "an expired session");
    let (_, _, page) = http(&short, "GET", "/login?why=expired", &[], b"");
    assert!(String::from_utf8_lossy(&page).contains("Your session ended"), "the login page says why");

    // On a LAN: TLS with the node's own certificate, whose fingerprint it
    // prints; the session cookie is Secure there.
    let pid = procs.pid("drive-serve-short");
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    std::thread::sleep(Duration::from_secs(2));
    let (child, first) = serve(dir.path(), &laptop, &boot, "serve-lan", &["--lan"]);
    procs.children.push(("drive-serve-lan".into(), child));
    let lan = first["url"].as_str().expect("url");
    assert!(lan.starts_with("https://"), "{first}");
    let pin = first["tls_sha256"].as_str().expect("a fingerprint").to_string();
    let lan = lan.trim_start_matches("https://").trim_end_matches('/').to_string();
    let body = format!("password={}", PASSWORD.replace(' ', "+"));
    let answer = tls_request(
        &lan,
        &pin,
        "POST /login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 303"), "login over TLS: {answer}");
    let cookie_line = answer.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie")).expect("a cookie");
    assert!(cookie_line.contains("; Secure"), "{cookie_line}");
    let wrong = "00:".repeat(31) + "00";
    assert!(tls_request(&lan, &wrong, "GET /login", &[], b"").is_empty(), "another certificate is not this node's");
    drop(procs);
}

/// Accepts exactly the certificate whose SHA-256 is `pin` (as the node
/// prints it): what a person checking the fingerprint does.
#[derive(Debug)]
struct Pinned(String);

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let d = ring::digest::digest(&ring::digest::SHA256, end.as_ref());
        let hex = d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        if hex == self.0 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(m, c, d, &algs)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(m, c, d, &algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// One request over TLS to `addr`, trusting only the certificate `pin`;
/// the answer's head and body as text (empty if the handshake failed).
fn tls_request(addr: &str, pin: &str, line: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Pinned(pin.to_string())))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("connection");
    let sock = std::net::TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut req = format!("{line} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    if tls.write_all(req.as_bytes()).and_then(|()| tls.write_all(body)).is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
