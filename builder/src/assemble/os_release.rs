//! `/etc/os-release` (os-release(5)): the image's identity, also the UKI's `.osrel` section
//! (UAPI.5, the Unified Kernel Image specification), where boot menus read the name from.

use crate::definition::ImageDefinition;

/// The os-release text of the image `def`.
pub fn os_release(def: &ImageDefinition) -> String {
    format!(
        "NAME=\"uvmkit\"\nID=uvmkit\nPRETTY_NAME=\"uvmkit {name}\"\nVARIANT_ID={name}\nVERSION_ID={version}\n",
        name = def.name,
        version = env!("CARGO_PKG_VERSION")
    )
}
