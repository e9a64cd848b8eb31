//! What the EFI system partition of the disk images and the ISO's El Torito image holds, for
//! each [`EspLayout`]: the UKI alone, or Debian's signed chain (shim, GRUB, the MOK manager)
//! with the kernel, the initrd and a `grub.cfg` that boots them.
//!
//! Both put their first stage at the removable-media boot path (UEFI 2.10, 3.5.1.1:
//! `\EFI\BOOT\BOOTX64.EFI`), which firmware starts without a boot entry. shim loads
//! `grubx64.efi` from its own directory (shim's `DEFAULT_LOADER`), and `mmx64.efi` from there
//! when a MOK change is pending; no `fbx64.efi` is shipped, so shim never runs its fallback,
//! which would write boot entries into the firmware's variables and reset.

use crate::definition::EspLayout;
use crate::inputs::ShimChain;
use uvmkit_disk::esp::EspFile;
use uvmkit_filetree::FileData;

/// The removable-media boot path of x64 (UEFI 2.10, 3.5.1.1).
pub const BOOT_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// Where shim looks for the boot loader it verifies and starts: beside itself.
pub const GRUB_PATH: &str = "EFI/BOOT/grubx64.efi";
/// Where shim looks for its MOK manager: beside itself.
pub const MOK_MANAGER_PATH: &str = "EFI/BOOT/mmx64.efi";
/// Where Debian's signed GRUB reads its configuration: `$prefix/grub.cfg`, its built-in prefix
/// being `/EFI/debian` on the device it was loaded from.
pub const GRUB_CFG_PATH: &str = "EFI/debian/grub.cfg";
/// The kernel on the shim layout's ESP (the ISO's BIOS path reads the same name).
pub const KERNEL_PATH: &str = "boot/vmlinuz";
/// The initrd on the shim layout's ESP (the ISO's BIOS path reads the same name).
pub const INITRD_PATH: &str = "boot/initrd.img";

/// What goes on the ESP, by layout.
pub enum EspBoot<'a> {
    /// The UKI as the boot path.
    Uki {
        /// The Unified Kernel Image.
        uki: &'a FileData,
    },
    /// shim as the boot path, with GRUB, the MOK manager, the kernel, the initrd and
    /// `grub.cfg`.
    Shim {
        /// Debian's signed binaries.
        chain: &'a ShimChain,
        /// The kernel (signed by Debian).
        kernel: &'a FileData,
        /// The image's initrd.
        initrd: &'a FileData,
        /// The kernel command line.
        cmdline: &'a str,
    },
}

impl EspBoot<'_> {
    /// Which layout this is.
    pub fn layout(&self) -> EspLayout {
        match self {
            EspBoot::Uki { .. } => EspLayout::Uki,
            EspBoot::Shim { .. } => EspLayout::Shim,
        }
    }

    /// The ESP's files, in path order.
    pub fn files(&self) -> Vec<EspFile> {
        let file = |path: &str, source: &FileData| EspFile {
            path: path.into(),
            source: source.clone(),
        };
        let mut files = match self {
            EspBoot::Uki { uki } => vec![file(BOOT_PATH, uki)],
            EspBoot::Shim {
                chain,
                kernel,
                initrd,
                cmdline,
            } => vec![
                file(BOOT_PATH, &chain.shim),
                file(GRUB_PATH, &chain.grub),
                file(MOK_MANAGER_PATH, &chain.mok_manager),
                file(GRUB_CFG_PATH, &FileData::inline(grub_cfg(cmdline).into_bytes())),
                file(KERNEL_PATH, kernel),
                file(INITRD_PATH, initrd),
            ],
        };
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }
}

/// The `grub.cfg` that boots the kernel with the initrd and `cmdline` at once: plain commands,
/// no menu and so no delay. GRUB's own output also goes to the first serial port when there is
/// one (firmware does not always mirror its console there). Paths are on GRUB's `$root`, the
/// device `grub.cfg` was read from.
pub fn grub_cfg(cmdline: &str) -> String {
    let args: Vec<String> = kernel_arguments(cmdline).iter().map(|a| grub_quote(a)).collect();
    let linux = std::iter::once(format!("/{KERNEL_PATH}"))
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "# Written by uvmkit. Secure Boot verifies shim, GRUB and the kernel; not this file, the\n\
         # initrd or the command line.\n\
         if serial --unit=0 --speed=115200; then\n\
         \tterminal_input --append serial\n\
         \tterminal_output --append serial\n\
         fi\n\
         linux {linux}\n\
         initrd /{INITRD_PATH}\n\
         boot\n"
    )
}

/// The kernel's parameters as the kernel splits its command line (lib/cmdline.c `next_arg`):
/// at spaces outside double quotes, the quotes themselves dropped. GRUB's `linux` joins its
/// arguments with spaces and double-quotes one that holds a space, which the kernel reads
/// back as the same parameter.
fn kernel_arguments(cmdline: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_ascii_whitespace() && !quoted => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

/// `word` as one GRUB script word, taken literally: in single quotes, which GRUB's lexer ends
/// only at the next single quote (the definition's validation refuses single quotes in the
/// command line).
fn grub_quote(word: &str) -> String {
    format!("'{word}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_boots_the_kernel_with_the_command_line_as_the_kernel_reads_it() {
        let cfg = grub_cfg("console=tty0  console=ttyS0 foo=\"a b\" $x;y");
        assert!(
            cfg.contains("\nlinux /boot/vmlinuz 'console=tty0' 'console=ttyS0' 'foo=a b' '$x;y'\n"),
            "{cfg}"
        );
        assert!(cfg.contains("\ninitrd /boot/initrd.img\nboot\n"), "{cfg}");
        assert!(cfg.contains("if serial --unit=0 --speed=115200; then\n"), "{cfg}");
    }

    #[test]
    fn the_shim_layout_puts_shim_at_the_boot_path_and_grub_beside_it() {
        let chain = ShimChain {
            shim: FileData::inline(b"shim".to_vec()),
            mok_manager: FileData::inline(b"mm".to_vec()),
            grub: FileData::inline(b"grub".to_vec()),
        };
        let kernel = FileData::inline(b"kernel".to_vec());
        let initrd = FileData::inline(b"initrd".to_vec());
        let boot = EspBoot::Shim {
            chain: &chain,
            kernel: &kernel,
            initrd: &initrd,
            cmdline: "quiet",
        };
        let files = boot.files();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "EFI/BOOT/BOOTX64.EFI",
                "EFI/BOOT/grubx64.efi",
                "EFI/BOOT/mmx64.efi",
                "EFI/debian/grub.cfg",
                "boot/initrd.img",
                "boot/vmlinuz"
            ]
        );
        assert_eq!(files[0].source.read_all().unwrap(), b"shim");
        assert_eq!(boot.layout(), EspLayout::Shim);
        let uki = FileData::inline(b"uki".to_vec());
        let paths: Vec<String> = EspBoot::Uki { uki: &uki }.files().into_iter().map(|f| f.path).collect();
        assert_eq!(paths, ["EFI/BOOT/BOOTX64.EFI"]);
    }
}
