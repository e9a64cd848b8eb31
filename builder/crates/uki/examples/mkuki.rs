//! Assembles a UKI from files: `mkuki STUB KERNEL INITRD CMDLINE OSREL OUT`.
//!
//! For building test images by hand; uvmkit itself calls `write_uki` from its build.

use std::fs;
use std::io::BufWriter;
use std::path::Path;

use uvmkit_uki::{write_uki, SectionData, UkiSections};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [stub, kernel, initrd, cmdline, osrel, out] = args.as_slice() else {
        return Err("usage: mkuki STUB KERNEL INITRD CMDLINE OSREL OUT".into());
    };
    let stub = fs::read(stub)?;
    let osrel = fs::read(osrel)?;
    let sections = UkiSections {
        osrel: &osrel,
        cmdline: cmdline.as_bytes(),
        uname: None,
        initrd: Some(SectionData::File(Path::new(initrd))),
        linux: SectionData::File(Path::new(kernel)),
    };
    let mut file = BufWriter::new(fs::File::create(out)?);
    let layout = write_uki(&stub, &sections, &mut file)?;
    for s in &layout.sections {
        println!(
            "{:<9} vma {:#010x} size {:#010x} file {:#010x} raw {:#010x} flags {:#010x}",
            s.name, s.virtual_address, s.virtual_size, s.file_offset, s.raw_size, s.characteristics
        );
    }
    println!("SizeOfImage {:#x}, {} bytes", layout.size_of_image, layout.file_size);
    Ok(())
}
