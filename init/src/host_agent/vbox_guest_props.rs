//! VirtualBox guest properties through the `vboxguest` driver's `/dev/vboxguest` ioctls:
//! an HGCM connection to the host's `VBoxGuestPropSvc`, then `SET_PROP_VALUE` calls.
//!
//! Layouts from `include/uapi/linux/vboxguest.h` (`struct vbg_ioctl_hdr`,
//! `vbg_ioctl_hgcm_connect`, `vbg_ioctl_hgcm_call`) and `vbox_vmmdev_types.h`
//! (`vmmdev_hgcm_function_parameter64`); the service's function numbers and argument lists
//! from VirtualBox's `include/VBox/HostServices/GuestPropertySvc.h`. The property names are
//! the ones VBoxService's VMInfo writes, which `VBoxManage guestproperty` and the VirtualBox
//! Manager read.

use std::io;

use super::guest_facts::GuestFacts;

/// `VBG_IOCTL_HDR_VERSION`.
pub const HDR_VERSION: u32 = 0x10001;
/// `sizeof(struct vbg_ioctl_hdr)`.
pub const HDR_SIZE: usize = 24;
/// `VMMDEV_HGCM_LOC_LOCALHOST_EXISTING`: a service the host already runs.
pub const LOC_LOCALHOST_EXISTING: u32 = 2;
/// The guest property service's name.
pub const SERVICE: &str = "VBoxGuestPropSvc";
/// `GUEST_PROP_FN_SET_PROP_VALUE`: name and value, no flags.
pub const FN_SET_PROP_VALUE: u32 = 3;
/// `VMMDEV_HGCM_PARM_TYPE_LINADDR_IN`: a buffer the host only reads.
pub const PARM_LINADDR_IN: u32 = 5;
/// `sizeof(struct vmmdev_hgcm_function_parameter64)`.
pub const PARM64_SIZE: usize = 16;
/// `sizeof(struct vbg_ioctl_hgcm_call)` without its parameters.
pub const CALL_SIZE: usize = HDR_SIZE + 16;
/// How long the host may take for one call.
pub const CALL_TIMEOUT_MS: u32 = 5_000;

/// `_IOC(_IOC_READ|_IOC_WRITE, 'V', nr, size)`.
pub const fn ioc_rw(nr: u32, size: usize) -> libc::c_ulong {
    ((3u32 << 30) | ((size as u32) << 16) | (0x56 << 8) | nr) as libc::c_ulong
}
/// `VBG_IOCTL_HGCM_CONNECT`.
pub const IOCTL_HGCM_CONNECT: libc::c_ulong = ioc_rw(4, HDR_SIZE + 132);
/// `VBG_IOCTL_HGCM_DISCONNECT`.
#[cfg(test)]
pub const IOCTL_HGCM_DISCONNECT: libc::c_ulong = ioc_rw(5, HDR_SIZE + 4);
/// `VBG_IOCTL_HGCM_CALL_64(size)`.
pub const fn ioctl_hgcm_call64(size: usize) -> libc::c_ulong {
    ioc_rw(7, size)
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum VBoxError {
    /// The ioctl itself failed.
    #[error("/dev/vboxguest: {what}: {source}")]
    Ioctl {
        /// Which request.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The host answered with a VBox error status (`VERR_*`, vbox_err.h).
    #[error("/dev/vboxguest: {what}: the host returned VBox status {rc}")]
    Host {
        /// Which request.
        what: String,
        /// The status.
        rc: i32,
    },
}

/// The driver's ioctl interface: the real device, or a fake in tests.
pub trait VBoxGuestDevice {
    /// `ioctl(fd, request, buf)`.
    fn ioctl(&mut self, request: libc::c_ulong, buf: &mut [u8]) -> io::Result<()>;
}

impl VBoxGuestDevice for std::fs::File {
    fn ioctl(&mut self, request: libc::c_ulong, buf: &mut [u8]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: every request this module sends is sized by `buf` (the size is encoded in
        // the request number and in the header), and the driver writes only within it.
        if unsafe { libc::ioctl(self.as_raw_fd(), request as _, buf.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A `struct vbg_ioctl_hdr` for a request of `size_in` bytes answered in `size_out`.
fn header(buf: &mut [u8], size_in: usize, size_out: usize) {
    buf[0..4].copy_from_slice(&(size_in as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&HDR_VERSION.to_le_bytes());
    buf[8..12].copy_from_slice(&0u32.to_le_bytes()); // VBG_IOCTL_HDR_TYPE_DEFAULT
    buf[12..16].copy_from_slice(&0i32.to_le_bytes());
    buf[16..20].copy_from_slice(&(size_out as u32).to_le_bytes());
    buf[20..24].copy_from_slice(&0u32.to_le_bytes());
}

fn rc(buf: &[u8]) -> i32 {
    i32::from_le_bytes(buf[12..16].try_into().expect("four bytes"))
}

/// The `struct vbg_ioctl_hgcm_connect` request for `VBoxGuestPropSvc`.
pub fn connect_request() -> Vec<u8> {
    let mut buf = vec![0u8; HDR_SIZE + 132];
    header(&mut buf, HDR_SIZE + 132, HDR_SIZE + 4);
    buf[24..28].copy_from_slice(&LOC_LOCALHOST_EXISTING.to_le_bytes());
    buf[28..28 + SERVICE.len()].copy_from_slice(SERVICE.as_bytes());
    buf
}

/// A `struct vbg_ioctl_hgcm_call` for `SET_PROP_VALUE`, with two `LINADDR_IN` parameters
/// pointing at `name` and `value` (NUL-terminated; sizes include the NUL). The buffers must
/// outlive the ioctl.
pub fn set_prop_value_request(client_id: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
    let size = CALL_SIZE + 2 * PARM64_SIZE;
    let mut buf = vec![0u8; size];
    header(&mut buf, size, size);
    buf[24..28].copy_from_slice(&client_id.to_le_bytes());
    buf[28..32].copy_from_slice(&FN_SET_PROP_VALUE.to_le_bytes());
    buf[32..36].copy_from_slice(&CALL_TIMEOUT_MS.to_le_bytes());
    buf[36] = 0; // interruptible: ignored for user-space calls
    buf[37] = 0;
    buf[38..40].copy_from_slice(&2u16.to_le_bytes());
    for (i, text) in [name, value].into_iter().enumerate() {
        let at = CALL_SIZE + i * PARM64_SIZE;
        buf[at..at + 4].copy_from_slice(&PARM_LINADDR_IN.to_le_bytes());
        buf[at + 4..at + 8].copy_from_slice(&(text.len() as u32).to_le_bytes());
        buf[at + 8..at + 16].copy_from_slice(&(text.as_ptr() as u64).to_le_bytes());
    }
    buf
}

/// A connection to the guest property service.
pub struct GuestProperties<D: VBoxGuestDevice> {
    device: D,
    /// The HGCM client id the host assigned.
    pub client_id: u32,
}

impl<D: VBoxGuestDevice> GuestProperties<D> {
    /// Connects to `VBoxGuestPropSvc`.
    pub fn connect(mut device: D) -> Result<GuestProperties<D>, VBoxError> {
        let mut buf = connect_request();
        device
            .ioctl(IOCTL_HGCM_CONNECT, &mut buf)
            .map_err(|source| VBoxError::Ioctl {
                what: "HGCM connect to VBoxGuestPropSvc",
                source,
            })?;
        if rc(&buf) < 0 {
            return Err(VBoxError::Host {
                what: "HGCM connect to VBoxGuestPropSvc".into(),
                rc: rc(&buf),
            });
        }
        let client_id = u32::from_le_bytes(buf[24..28].try_into().expect("four bytes"));
        Ok(GuestProperties { device, client_id })
    }

    /// Sets one property.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), VBoxError> {
        let name_z = [name.as_bytes(), b"\0"].concat();
        let value_z = [value.as_bytes(), b"\0"].concat();
        let mut buf = set_prop_value_request(self.client_id, &name_z, &value_z);
        let size = buf.len();
        self.device
            .ioctl(ioctl_hgcm_call64(size), &mut buf)
            .map_err(|source| VBoxError::Ioctl {
                what: "HGCM call SET_PROP_VALUE",
                source,
            })?;
        if rc(&buf) < 0 {
            return Err(VBoxError::Host {
                what: format!("SET_PROP_VALUE {name}"),
                rc: rc(&buf),
            });
        }
        Ok(())
    }

    /// Disconnects (the driver also does when the device is closed).
    #[cfg(test)]
    pub fn disconnect(mut self) {
        let mut buf = vec![0u8; HDR_SIZE + 4];
        header(&mut buf, HDR_SIZE + 4, HDR_SIZE);
        buf[24..28].copy_from_slice(&self.client_id.to_le_bytes());
        let _ = self.device.ioctl(IOCTL_HGCM_DISCONNECT, &mut buf);
    }
}

/// The properties VBoxService's VMInfo reports, from `facts`: the OS, then per interface with
/// an IPv4 address its address, broadcast, netmask, MAC, status and name, and the count.
pub fn properties(facts: &GuestFacts) -> Vec<(String, String)> {
    let mut props = vec![
        (
            "/VirtualBox/GuestInfo/OS/Product".to_string(),
            facts.kernel_name.clone(),
        ),
        (
            "/VirtualBox/GuestInfo/OS/Release".to_string(),
            facts.kernel_release.clone(),
        ),
        (
            "/VirtualBox/GuestInfo/OS/Version".to_string(),
            facts.kernel_version.clone(),
        ),
    ];
    let mut count = 0;
    for interface in &facts.interfaces {
        let Some((address, prefix)) = interface.ipv4.first() else {
            continue;
        };
        let mask = if *prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(*prefix))
        };
        let broadcast = u32::from(*address) | !mask;
        let base = format!("/VirtualBox/GuestInfo/Net/{count}");
        let mac: String = interface.mac.iter().map(|b| format!("{b:02X}")).collect();
        props.push((format!("{base}/V4/IP"), address.to_string()));
        props.push((
            format!("{base}/V4/Broadcast"),
            std::net::Ipv4Addr::from(broadcast).to_string(),
        ));
        props.push((format!("{base}/V4/Netmask"), std::net::Ipv4Addr::from(mask).to_string()));
        props.push((format!("{base}/MAC"), mac));
        props.push((format!("{base}/Status"), "Up".to_string()));
        props.push((format!("{base}/Name"), interface.name.clone()));
        count += 1;
    }
    props.push(("/VirtualBox/GuestInfo/Net/Count".to_string(), count.to_string()));
    props
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::host_agent::guest_facts::InterfaceFacts;

    #[test]
    fn ioctl_numbers_and_sizes_match_the_uapi_header() {
        // From VBG_IOCTL_HGCM_CONNECT, VBG_IOCTL_HGCM_DISCONNECT and
        // VBG_IOCTL_HGCM_CALL_64(72) compiled against include/uapi/linux/vboxguest.h.
        assert_eq!(IOCTL_HGCM_CONNECT, 0xc09c5604);
        assert_eq!(IOCTL_HGCM_DISCONNECT, 0xc01c5605);
        assert_eq!(ioctl_hgcm_call64(72), 0xc0485607);
        assert_eq!(CALL_SIZE, 40);
    }

    #[test]
    fn connect_request_is_byte_exact() {
        let buf = connect_request();
        let mut expected = vec![0u8; 156];
        expected[0..4].copy_from_slice(&156u32.to_le_bytes()); // size_in
        expected[4..8].copy_from_slice(&[0x01, 0x00, 0x01, 0x00]); // version 0x10001
        expected[16..20].copy_from_slice(&28u32.to_le_bytes()); // size_out: hdr + client_id
        expected[24] = 2; // VMMDEV_HGCM_LOC_LOCALHOST_EXISTING
        expected[28..44].copy_from_slice(b"VBoxGuestPropSvc");
        assert_eq!(buf, expected);
    }

    /// The driver and host as a fake: checks each request's bytes, follows the LINADDR_IN
    /// pointers as the driver does, and records the properties.
    #[derive(Default)]
    struct FakeVBoxGuest {
        set: Vec<(String, String)>,
        fail_connect: bool,
    }

    impl VBoxGuestDevice for FakeVBoxGuest {
        fn ioctl(&mut self, request: libc::c_ulong, buf: &mut [u8]) -> io::Result<()> {
            let size_in = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
            let size_out = u32::from_le_bytes(buf[16..20].try_into().unwrap()) as usize;
            // vbg_misc_device_ioctl: the size in the request number is max(size_in, size_out).
            assert_eq!((request >> 16 & 0x3fff) as usize, size_in.max(size_out));
            assert_eq!(&buf[4..8], &HDR_VERSION.to_le_bytes());
            match request & 0xff {
                4 => {
                    if self.fail_connect {
                        buf[12..16].copy_from_slice(&(-2900i32).to_le_bytes()); // VERR_HGCM_SERVICE_NOT_FOUND
                        return Ok(());
                    }
                    buf[24..28].copy_from_slice(&42u32.to_le_bytes());
                }
                7 => {
                    assert_eq!(u32::from_le_bytes(buf[24..28].try_into().unwrap()), 42);
                    assert_eq!(u32::from_le_bytes(buf[28..32].try_into().unwrap()), FN_SET_PROP_VALUE);
                    assert_eq!(u16::from_le_bytes(buf[38..40].try_into().unwrap()), 2);
                    let mut strings = Vec::new();
                    for i in 0..2 {
                        let at = 40 + 16 * i;
                        assert_eq!(u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()), PARM_LINADDR_IN);
                        let len = u32::from_le_bytes(buf[at + 4..at + 8].try_into().unwrap()) as usize;
                        let ptr = u64::from_le_bytes(buf[at + 8..at + 16].try_into().unwrap()) as *const u8;
                        // SAFETY: the request points at buffers alive for the call.
                        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
                        assert_eq!(bytes.last(), Some(&0), "strings are NUL-terminated, sizes count it");
                        strings.push(String::from_utf8(bytes[..len - 1].to_vec()).unwrap());
                    }
                    self.set.push((strings[0].clone(), strings[1].clone()));
                }
                5 => {}
                other => panic!("unexpected ioctl {other}"),
            }
            Ok(())
        }
    }

    #[test]
    fn set_prop_value_request_is_byte_exact() {
        let (name, value) = (b"/VirtualBox/GuestInfo/Net/0/V4/IP\0", b"10.0.2.15\0");
        let buf = set_prop_value_request(7, name, value);
        let mut expected = Vec::new();
        for word in [72u32, 0x10001, 0, 0, 72, 0, 7, 3, 5000] {
            expected.extend_from_slice(&word.to_le_bytes());
        }
        expected.extend_from_slice(&[0, 0, 2, 0]); // interruptible, reserved, parm_count
        expected.extend_from_slice(&5u32.to_le_bytes());
        expected.extend_from_slice(&34u32.to_le_bytes());
        expected.extend_from_slice(&(name.as_ptr() as u64).to_le_bytes());
        expected.extend_from_slice(&5u32.to_le_bytes());
        expected.extend_from_slice(&10u32.to_le_bytes());
        expected.extend_from_slice(&(value.as_ptr() as u64).to_le_bytes());
        assert_eq!(buf, expected);
    }

    #[test]
    fn the_ip_reaches_the_host_as_virtualbox_guestinfo() {
        let facts = GuestFacts {
            kernel_name: "Linux".into(),
            kernel_release: "6.12.48+deb13-amd64".into(),
            kernel_version: "#1 SMP Debian".into(),
            interfaces: vec![
                InterfaceFacts {
                    name: "eth0".into(),
                    mac: [0x08, 0x00, 0x27, 0xab, 0xcd, 0xef],
                    ipv4: vec![(Ipv4Addr::new(10, 0, 2, 15), 24)],
                    ..Default::default()
                },
                InterfaceFacts {
                    name: "eth1".into(),
                    mac: [0x08, 0x00, 0x27, 0, 0, 1],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut props = GuestProperties::connect(FakeVBoxGuest::default()).unwrap();
        assert_eq!(props.client_id, 42);
        for (name, value) in properties(&facts) {
            props.set(&name, &value).unwrap();
        }
        let set: Vec<(&str, &str)> = props.device.set.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            set,
            [
                ("/VirtualBox/GuestInfo/OS/Product", "Linux"),
                ("/VirtualBox/GuestInfo/OS/Release", "6.12.48+deb13-amd64"),
                ("/VirtualBox/GuestInfo/OS/Version", "#1 SMP Debian"),
                ("/VirtualBox/GuestInfo/Net/0/V4/IP", "10.0.2.15"),
                ("/VirtualBox/GuestInfo/Net/0/V4/Broadcast", "10.0.2.255"),
                ("/VirtualBox/GuestInfo/Net/0/V4/Netmask", "255.255.255.0"),
                ("/VirtualBox/GuestInfo/Net/0/MAC", "080027ABCDEF"),
                ("/VirtualBox/GuestInfo/Net/0/Status", "Up"),
                ("/VirtualBox/GuestInfo/Net/0/Name", "eth0"),
                ("/VirtualBox/GuestInfo/Net/Count", "1"),
            ]
        );
        props.disconnect();
    }

    #[test]
    fn a_host_without_the_service_is_a_clear_error() {
        let err = GuestProperties::connect(FakeVBoxGuest {
            fail_connect: true,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("VBoxGuestPropSvc"), "{err}");
        assert!(err.to_string().contains("-2900"), "{err}");
    }
}
