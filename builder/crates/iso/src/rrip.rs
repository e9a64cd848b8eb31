//! System Use Sharing Protocol (SUSP 1.12) and Rock Ridge (RRIP 1.10) entries: POSIX names,
//! modes, owners, times, symbolic links and device numbers in the system use field of a
//! directory record, spilling into continuation areas when a record cannot hold them.

use crate::both::both_u32;

/// Largest System Use entry: its length is one byte.
const ENTRY_MAX: usize = 255;
/// Bytes of payload per `NM` entry (header is 5 bytes).
const NM_CHUNK: usize = ENTRY_MAX - 5;
/// Bytes of component records per `SL` entry (header is 5 bytes).
const SL_CHUNK: usize = ENTRY_MAX - 5;
/// Bytes of text per `SL` component record (header is 2 bytes).
const COMPONENT_CHUNK: usize = SL_CHUNK - 2;
/// Size of a `CE` entry (SUSP 5.1).
pub(crate) const CE_LEN: usize = 28;
/// A continuation area lies within one logical block.
pub(crate) const CONTINUATION_MAX: usize = 2048;

/// The Rock Ridge identification recorded in the `ER` entry (RRIP 1.10 §5.2 gives these
/// three texts for version 1 of the extension).
const RRIP_ID: &str = "RRIP_1991A";
const RRIP_DESCRIPTOR: &str = "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const RRIP_SOURCE: &str = "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// One System Use entry: signature, length, version 1, then `data` (SUSP 4.1).
fn entry(sig: &[u8; 2], data: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(4 + data.len());
    e.extend_from_slice(sig);
    e.push((4 + data.len()) as u8);
    e.push(1);
    e.extend_from_slice(data);
    e
}

/// `SP`: the SUSP indicator, first entry of the root's "." record (SUSP 5.3), with no bytes
/// skipped.
pub(crate) fn sp() -> Vec<u8> {
    entry(b"SP", &[0xBE, 0xEF, 0])
}

/// `ER`: declares the Rock Ridge extension (SUSP 5.5).
pub(crate) fn er() -> Vec<u8> {
    let mut data = vec![
        RRIP_ID.len() as u8,
        RRIP_DESCRIPTOR.len() as u8,
        RRIP_SOURCE.len() as u8,
        1, // EXT_VER
    ];
    data.extend_from_slice(RRIP_ID.as_bytes());
    data.extend_from_slice(RRIP_DESCRIPTOR.as_bytes());
    data.extend_from_slice(RRIP_SOURCE.as_bytes());
    entry(b"ER", &data)
}

/// `PX`: POSIX file mode, links, user and group (RRIP 1.10 §4.1.1, 36 bytes).
pub(crate) fn px(st_mode: u32, nlink: u32, uid: u32, gid: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(32);
    for v in [st_mode, nlink, uid, gid] {
        data.extend_from_slice(&both_u32(v));
    }
    entry(b"PX", &data)
}

/// `PN`: device number (RRIP 1.10 §4.1.2), major in the high word, minor in the low.
pub(crate) fn pn(major: u32, minor: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(16);
    data.extend_from_slice(&both_u32(major));
    data.extend_from_slice(&both_u32(minor));
    entry(b"PN", &data)
}

/// `TF`: modification, access and attribute-change times, all `date` (RRIP 1.10 §4.1.6,
/// flags MODIFY | ACCESS | ATTRIBUTES, short form).
pub(crate) fn tf(date: [u8; 7]) -> Vec<u8> {
    let mut data = vec![0b0000_1110];
    for _ in 0..3 {
        data.extend_from_slice(&date);
    }
    entry(b"TF", &data)
}

/// `NM` entries for an alternate name (RRIP 1.10 §4.1.4), split with the CONTINUE flag when
/// the name is longer than one entry holds.
pub(crate) fn nm(name: &[u8]) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = name.chunks(NM_CHUNK).collect();
    let last = chunks.len().saturating_sub(1);
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut data = vec![u8::from(i != last)];
            data.extend_from_slice(chunk);
            entry(b"NM", &data)
        })
        .collect()
}

/// `SL` entries for a symbolic link's target (RRIP 1.10 §4.1.3): one component record per
/// path component (ROOT, CURRENT and PARENT as flags), long components split with the
/// component CONTINUE flag, and the records spread over as many entries as needed, each but
/// the last carrying the entry CONTINUE flag.
pub(crate) fn sl(target: &str) -> Vec<Vec<u8>> {
    const CONTINUE: u8 = 0x01;
    const CURRENT: u8 = 0x02;
    const PARENT: u8 = 0x04;
    const ROOT: u8 = 0x08;
    let mut records: Vec<Vec<u8>> = Vec::new();
    if target.starts_with('/') {
        records.push(vec![ROOT, 0]);
    }
    for part in target.split('/').filter(|p| !p.is_empty()) {
        match part {
            "." => records.push(vec![CURRENT, 0]),
            ".." => records.push(vec![PARENT, 0]),
            _ => {
                let pieces: Vec<&[u8]> = part.as_bytes().chunks(COMPONENT_CHUNK).collect();
                let last = pieces.len() - 1;
                for (i, piece) in pieces.iter().enumerate() {
                    let mut r = vec![if i == last { 0 } else { CONTINUE }, piece.len() as u8];
                    r.extend_from_slice(piece);
                    records.push(r);
                }
            }
        }
    }
    // An empty target has no components; record one empty component so the entry is valid.
    if records.is_empty() {
        records.push(vec![0, 0]);
    }
    let mut groups: Vec<Vec<u8>> = vec![Vec::new()];
    for r in records {
        if groups.last().is_some_and(|g| g.len() + r.len() > SL_CHUNK) {
            groups.push(Vec::new());
        }
        groups.last_mut().expect("one group exists").extend_from_slice(&r);
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut data = vec![if i == last { 0 } else { CONTINUE }];
            data.extend_from_slice(g);
            entry(b"SL", &data)
        })
        .collect()
}

/// `CE`: where the rest of the system use entries continue (SUSP 5.1).
pub(crate) fn ce(block: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(24);
    data.extend_from_slice(&both_u32(block));
    data.extend_from_slice(&both_u32(offset));
    data.extend_from_slice(&both_u32(len));
    entry(b"CE", &data)
}

/// A record's system use entries divided between the record itself and continuation areas.
#[derive(Clone, Debug, Default)]
pub(crate) struct SuspLayout {
    /// Entries that stay in the directory record.
    pub inline: Vec<u8>,
    /// Continuation areas in chain order; each but the last is followed (in the area before
    /// it) by a `CE` pointing at the next. Empty when everything fits inline.
    pub areas: Vec<Vec<u8>>,
}

impl SuspLayout {
    /// Bytes the entries take in the directory record, the `CE` included.
    pub fn inline_len(&self) -> usize {
        self.inline.len() + if self.areas.is_empty() { 0 } else { CE_LEN }
    }

    /// Length of continuation area `i` as recorded, its trailing `CE` included.
    pub fn area_len(&self, i: usize) -> usize {
        self.areas[i].len() + if i + 1 < self.areas.len() { CE_LEN } else { 0 }
    }
}

/// Puts `entries` in the record while they fit in `room` bytes; the rest go to continuation
/// areas of at most one block each. Entry order is kept (SUSP 5.3 needs `SP` first).
pub(crate) fn split(entries: Vec<Vec<u8>>, room: usize) -> SuspLayout {
    let total: usize = entries.iter().map(Vec::len).sum();
    if total <= room {
        return SuspLayout {
            inline: entries.concat(),
            areas: Vec::new(),
        };
    }
    let mut layout = SuspLayout::default();
    let mut rest = entries.into_iter().peekable();
    while let Some(e) = rest.peek() {
        if layout.inline.len() + e.len() + CE_LEN > room {
            break;
        }
        layout.inline.extend_from_slice(e);
        rest.next();
    }
    let rest: Vec<Vec<u8>> = rest.collect();
    let mut remaining: usize = rest.iter().map(Vec::len).sum();
    let mut area = Vec::new();
    for e in rest {
        // Keep room for a CE unless everything left fits in this area.
        let limit = if area.len() + remaining <= CONTINUATION_MAX {
            CONTINUATION_MAX
        } else {
            CONTINUATION_MAX - CE_LEN
        };
        if area.len() + e.len() > limit {
            layout.areas.push(std::mem::take(&mut area));
        }
        remaining -= e.len();
        area.extend_from_slice(&e);
    }
    layout.areas.push(area);
    layout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_have_their_lengths() {
        assert_eq!(sp(), [b'S', b'P', 7, 1, 0xBE, 0xEF, 0]);
        assert_eq!(px(0o100644, 1, 0, 0).len(), 36);
        assert_eq!(tf([0; 7]).len(), 26);
        assert_eq!(pn(1, 3).len(), 20);
        assert_eq!(ce(1, 2, 3).len(), CE_LEN);
        let er = er();
        assert_eq!(er[2] as usize, er.len());
    }

    #[test]
    fn long_names_and_links_are_split() {
        let name = vec![b'n'; 600];
        let parts = nm(&name);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() <= ENTRY_MAX && p[2] as usize == p.len()));
        assert_eq!(parts.iter().map(|p| p[4]).collect::<Vec<_>>(), [1, 1, 0]);
        let rebuilt: Vec<u8> = parts.iter().flat_map(|p| p[5..].to_vec()).collect();
        assert_eq!(rebuilt, name);

        let target = format!("/usr/../{}/./x", "c".repeat(700));
        let entries = sl(&target);
        assert!(entries.iter().all(|e| e.len() <= ENTRY_MAX && e[2] as usize == e.len()));
        assert_eq!(entries.last().unwrap()[4], 0);
        assert!(entries[..entries.len() - 1].iter().all(|e| e[4] == 1));
        // First record: ROOT; then "usr"; then PARENT.
        assert_eq!(&entries[0][5..7], &[0x08, 0]);
        assert_eq!(&entries[0][7..12], &[0, 3, b'u', b's', b'r']);
        assert_eq!(&entries[0][12..14], &[0x04, 0]);
    }

    #[test]
    fn split_keeps_order_and_bounds() {
        let entries: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 200]).collect();
        let layout = split(entries.clone(), 230);
        assert_eq!(layout.inline, entries[0]);
        assert!(layout.inline_len() <= 230);
        for i in 0..layout.areas.len() {
            assert!(layout.area_len(i) <= CONTINUATION_MAX);
        }
        let mut all = layout.inline.clone();
        for a in &layout.areas {
            all.extend_from_slice(a);
        }
        assert_eq!(all, entries.concat());
        let small = split(vec![vec![1; 10], vec![2; 10]], 20);
        assert!(small.areas.is_empty());
    }
}
