//! Two clients of one drive on three devices. Changes both make at once
//! all land (a client that lost a vote makes its change again on the
//! winner's tree); a change only one device of the three takes part in
//! is refused, said, and never read as the drive's.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::drive::*;
use common::{Procs, bin, json_out, s};

#[test]
fn changes_made_at_once_all_land_and_a_change_one_device_of_three_takes_part_in_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::new(&dir.path().join("logs"));
    let (boot, laptop, phone) = two_clients(&mut procs, dir.path());
    let note = dir.path().join("note.txt");
    std::fs::write(&note, "a note\n").expect("write");

    // Four puts from each client, all at once.
    let mut running = Vec::new();
    for i in 0..8 {
        let client = if i % 2 == 0 { &laptop } else { &phone };
        let to = format!("/race/{i}");
        let child = bin()
            .args(["drive", "put", &s(&note), "--to", &to, "--json", "--dir", &s(client), "--bootstrap", &boot])
            .env("IONSHARD_DRIVE_PASSWORD", PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("drive put");
        running.push((to, child));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    for (to, mut child) in running {
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("drive put --to {to} did not end within 180 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let o = child.wait_with_output().expect("output");
        json_out(&o, &format!("drive put --to {to}, one of eight at once"));
    }
    let ls = drive(&phone, &boot, &["ls", "-r", "/race"]);
    let listed = String::from_utf8_lossy(&ls.stdout).into_owned();
    for i in 0..8 {
        assert!(listed.contains(&format!("/race/{i}/note.txt")), "put {i} was lost: {listed}");
    }

    // The owner revokes the laptop on two of the three devices: its next
    // change reaches one device, not a majority of them.
    for device in ["router", "tv"] {
        let o = bin().args(["drive", "revoke", "laptop", "--json", "--dir", &s(&dir.path().join(device))]).output();
        json_out(&o.expect("revoke"), "drive revoke on a device");
    }
    refused(
        &drive(&laptop, &boot, &["mv", "/race/0", "/lonely"]),
        "a change one device took part in",
        "only 1 of the 3 devices",
    );
    // The phone's next change is the drive's; the lonely one is never read.
    json_out(&drive(&phone, &boot, &["mv", "/race/1", "/shared"]), "drive mv on the phone");
    for _ in 0..2 {
        let ls = drive(&phone, &boot, &["ls", "-r", "/"]);
        let listed = String::from_utf8_lossy(&ls.stdout).into_owned();
        assert!(listed.contains("/shared/note.txt") && listed.contains("/race/0/note.txt"), "{listed}");
        assert!(!listed.contains("/lonely"), "a change one device of three took part in was read: {listed}");
    }
    drop(procs);
}
