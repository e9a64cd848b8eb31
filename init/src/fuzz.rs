//! The init's readers of what a VM's user or hypervisor hands it, fed mutations of valid
//! samples and random bytes (`uvmkit_testkit::fuzz`): a NoCloud seed's `meta-data` and
//! `user-data`, the kernel command line's `uvmkit.` arguments, and the first bytes and
//! `uevent` text of a disk that may hold the data partition. None may panic, run long or hold
//! more than its heap bound; a panic here would be PID 1's, which takes the VM down.

use uvmkit_testkit::fuzz::Fuzz;

use crate::datadisk::{ext4_label, gpt_name, partition_contents};
use crate::instance::parse_command_line;
use crate::nocloud::parse_seed;

uvmkit_testkit::count_allocations!();

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm6 user@laptop";

#[test]
fn nocloud_seeds() {
    let meta = "instance-id: iid-local01\nlocal-hostname: cloudimg # the name\n";
    let user = format!(
        "#cloud-config\n# comment\nhostname: vm-7\npackage_update: true\nusers:\n  - name: ubuntu\n    \
         sudo: ALL=(ALL) NOPASSWD:ALL\nssh_authorized_keys:\n  - {KEY}\n  - \"ecdsa-sha2-nistp256 AAAAE2VjZHNh x # y\"\n\
         runcmd:\n  - [ls, -l, /]\nwrite_files:\n  - content: |\n      hello\n    path: /x\n\
         bootcmd: ['a', \"b\", c]\n'quoted': \"x\"\n"
    );
    // One input holds both files, split at the first NUL.
    let seeds = vec![format!("{meta}\0{user}").into_bytes(), meta.as_bytes().to_vec()];
    Fuzz::new("nocloud")
        .dictionary(&[
            "\n",
            "\n  ",
            "\n\t",
            ": ",
            ":",
            "- ",
            "-",
            "#",
            " #",
            "'",
            "\"",
            "[",
            "]",
            "{",
            "}",
            ",",
            "|",
            ">",
            "---\n",
            "...\n",
            "#cloud-config\n",
            "hostname: ",
            "ssh_authorized_keys:\n",
            "\u{e9}",
        ])
        .run(&seeds, |input| {
            let text = String::from_utf8_lossy(input);
            let (meta, user) = match text.split_once('\0') {
                Some((meta, user)) => (meta, Some(user)),
                None => (&text[..], None),
            };
            let _ = parse_seed(meta, user);
        });
}

#[test]
fn kernel_command_lines() {
    let seeds = vec![
        b"BOOT_IMAGE=/vmlinuz console=ttyS0 uvmkit.hostname=vm-3 uvmkit.settings=off quiet".to_vec(),
        b"uvmkit.hostname=a.b uvmkit.settings=on uvmkit.other=1".to_vec(),
    ];
    Fuzz::new("cmdline")
        .dictionary(&[" ", "=", "uvmkit.hostname=", "uvmkit.settings=", ".", "-", "\u{e9}"])
        .run(&seeds, |input| {
            let _ = parse_command_line(&String::from_utf8_lossy(input));
        });
}

#[test]
fn disk_heads_and_uevents() {
    let mut head = vec![0u8; 2048];
    head[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
    head[1024 + 0x78..1024 + 0x78 + 11].copy_from_slice(b"uvmkit-data");
    assert_eq!(ext4_label(&head).as_deref(), Some("uvmkit-data"));
    let uevent = b"MAJOR=8\nMINOR=1\nDEVNAME=sda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=uvmkit-data\n".to_vec();
    Fuzz::new("disk-head")
        .max_len(4096)
        .run(&[head, vec![0u8; 2048], uevent], |input| {
            let _ = ext4_label(input);
            let (head, tail) = input.split_at(input.len() / 2);
            let _ = partition_contents(head, tail);
            let _ = gpt_name(&String::from_utf8_lossy(input));
        });
}
