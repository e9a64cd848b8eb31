//! uvmkit: from an image definition to bootable utility VM images.
