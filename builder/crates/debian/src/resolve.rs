//! Dependency closure: from the packages a user asks for to every package they need, over
//! `Pre-Depends` and `Depends` (Policy 7.2), never `Recommends` or `Suggests`.
//!
//! The rules are apt's, simplified for a single architecture and an empty system:
//! - an OR-group already satisfied by a selected package (directly or through `Provides`)
//!   adds nothing; otherwise the first alternative that can be satisfied wins;
//! - a real package of the wanted name is preferred to packages that provide that name;
//! - among versions of a name the highest one satisfying the constraint wins;
//! - a versioned dependency on a virtual package is only met by a versioned `Provides`
//!   (Policy 7.5);
//! - the order of work is the order of requests and of fields, so the result is the same on
//!   every run.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::control::{format_alternatives, Op, Package, PackageIndex, Relation};
use crate::version::{DebVersion, VersionError};

/// One package asked for by the user, optionally with a version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Package name (a virtual name is resolved through its providers).
    pub name: String,
    /// Version constraint, when the user pinned one.
    pub version: Option<(Op, DebVersion)>,
}

impl Request {
    /// A request for the best version of `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Request {
            name: name.into(),
            version: None,
        }
    }

    /// A request for `name` at exactly `version`.
    pub fn exact(name: impl Into<String>, version: &str) -> Result<Self, VersionError> {
        Ok(Request {
            name: name.into(),
            version: Some((Op::Eq, DebVersion::parse(version)?)),
        })
    }

    fn as_relation(&self) -> Relation {
        Relation {
            name: self.name.clone(),
            arch_qualifier: None,
            constraint: self.version.clone(),
        }
    }
}

/// Why the closure could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A requested package does not exist in the index.
    #[error("requested package {relation} is not in {origin}; check the name and version, or add the suite or component that has it")]
    NotFound {
        /// The request as Debian writes a relation.
        relation: String,
        /// Where it was looked for.
        origin: String,
    },
    /// No alternative of a dependency can be satisfied.
    #[error("{} depends on {relation}, which no package in {origin} provides{}", chain.last().map(String::as_str).unwrap_or("?"), chain_note(chain))]
    Unsatisfiable {
        /// Requested package first, the package with the dependency last.
        chain: Vec<String>,
        /// The OR-group as written in the index.
        relation: String,
        /// Where it was looked for.
        origin: String,
    },
    /// A dependency needs a version of a package other than the one already selected.
    #[error("{} depends on {relation}, but {selected} was already selected (for {selected_for}); only one version of a package can be installed{}", chain.last().map(String::as_str).unwrap_or("?"), chain_note(chain))]
    Conflict {
        /// Requested package first, the package with the dependency last.
        chain: Vec<String>,
        /// The OR-group as written in the index.
        relation: String,
        /// `name version` already selected.
        selected: String,
        /// Why the selected one is there.
        selected_for: String,
    },
}

fn chain_note(chain: &[String]) -> String {
    if chain.len() > 1 {
        format!(" (dependency chain: {})", chain.join(" -> "))
    } else {
        String::new()
    }
}

/// A package in the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPackage {
    /// The chosen stanza.
    pub package: Package,
    /// `requested` or `dependency of NAME`.
    pub reason: String,
}

/// The closure of a request, sorted by package name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The chosen packages, sorted by name.
    pub packages: Vec<ResolvedPackage>,
    /// Package name → `requested` or `dependency of NAME` (the first package that needed it).
    pub why: BTreeMap<String, String>,
}

impl Resolution {
    /// Sum of the `.deb` sizes, in bytes.
    pub fn download_size(&self) -> u64 {
        self.packages.iter().map(|p| p.package.size).sum()
    }

    /// Sum of `Installed-Size`, in KiB.
    pub fn installed_size_kib(&self) -> u64 {
        self.packages.iter().filter_map(|p| p.package.installed_size).sum()
    }

    /// The chosen package named `name`.
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.packages
            .binary_search_by(|p| p.package.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.packages[i].package)
    }
}

/// A provider of a virtual name: the package and the version it provides, if any.
struct Provider<'a> {
    package: &'a Package,
    version: Option<&'a DebVersion>,
}

/// Computes dependency closures over one (possibly merged) package index for one
/// architecture.
pub struct Resolver<'a> {
    arch: String,
    origin: String,
    /// Installable stanzas by name, best version first.
    by_name: BTreeMap<&'a str, Vec<&'a Package>>,
    /// Virtual name → providers.
    providers: BTreeMap<&'a str, Vec<Provider<'a>>>,
}

impl<'a> Resolver<'a> {
    /// Indexes the packages of `index` installable on `arch` (that architecture and `all`).
    pub fn new(index: &'a PackageIndex, arch: &str) -> Self {
        let mut by_name: BTreeMap<&str, Vec<&Package>> = BTreeMap::new();
        let mut providers: BTreeMap<&str, Vec<Provider>> = BTreeMap::new();
        for p in index
            .packages()
            .iter()
            .filter(|p| p.architecture == arch || p.architecture == "all")
        {
            by_name.entry(p.name.as_str()).or_default().push(p);
            for prov in &p.provides {
                let version = match &prov.constraint {
                    Some((Op::Eq, v)) => Some(v),
                    _ => None,
                };
                providers
                    .entry(prov.name.as_str())
                    .or_default()
                    .push(Provider { package: p, version });
            }
        }
        for versions in by_name.values_mut() {
            // Stable sort: among equal versions the first in index order stays first.
            versions.sort_by(|a, b| b.version.cmp(&a.version));
        }
        Resolver {
            arch: arch.to_string(),
            origin: "the package index".to_string(),
            by_name,
            providers,
        }
    }

    /// Names the index in error messages (`bookworm/main`).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// The best installable stanza of `name` satisfying `constraint`.
    pub fn best(&self, name: &str, constraint: Option<&(Op, DebVersion)>) -> Option<&'a Package> {
        self.by_name.get(name)?.iter().copied().find(|p| match constraint {
            None => true,
            Some((op, v)) => op.holds(&p.version, v),
        })
    }

    /// Whether `p` can satisfy `rel` by its own name.
    fn real_matches(&self, rel: &Relation, p: &Package) -> bool {
        p.name == rel.name && rel.accepts(&p.version) && self.qualifier_matches(rel, p)
    }

    /// Architecture qualifiers (Policy 7.1, multiarch spec): `:any` needs `Multi-Arch:
    /// allowed`; `:native` and our own architecture are ordinary; another architecture can
    /// never be met in a single-architecture image.
    fn qualifier_matches(&self, rel: &Relation, p: &Package) -> bool {
        match rel.arch_qualifier.as_deref() {
            None | Some("native") => true,
            Some("any") => p.multi_arch.as_deref() == Some("allowed"),
            Some(q) => q == self.arch,
        }
    }

    /// Whether a provider satisfies `rel`: unversioned relations take any provider,
    /// versioned ones only a provider with a matching `Provides: name (= version)`.
    fn provider_matches(rel: &Relation, prov: &Provider<'_>) -> bool {
        match (&rel.constraint, prov.version) {
            (None, _) => true,
            (Some((op, want)), Some(have)) => op.holds(have, want),
            (Some(_), None) => false,
        }
    }

    /// Apt-like provider preference: higher `Priority` first, then name, then version.
    fn provider_rank(p: &Package) -> (u8, &str, std::cmp::Reverse<&DebVersion>) {
        let prio = match p.priority.as_deref() {
            Some("required") => 0,
            Some("important") => 1,
            Some("standard") => 2,
            Some("optional") => 3,
            _ => 4,
        };
        (prio, p.name.as_str(), std::cmp::Reverse(&p.version))
    }

    /// Resolves `requests` into their closure.
    pub fn resolve(&self, requests: &[Request]) -> Result<Resolution, ResolveError> {
        let mut state = State {
            selected: BTreeMap::new(),
            parent: BTreeMap::new(),
            queue: VecDeque::new(),
        };
        for req in requests {
            let rel = req.as_relation();
            if state.satisfied(self, &rel) {
                continue;
            }
            match self.choose(&state, &rel) {
                Choice::Package(p) => state.select(p, None),
                Choice::Conflict(_) | Choice::None => {
                    return Err(ResolveError::NotFound {
                        relation: rel.to_string(),
                        origin: self.origin.clone(),
                    })
                }
            }
        }
        while let Some(pkg) = state.queue.pop_front() {
            for group in pkg.pre_depends.iter().chain(&pkg.depends) {
                if group.iter().any(|rel| state.satisfied(self, rel)) {
                    continue;
                }
                let mut conflict = None;
                let mut chosen = None;
                for rel in group {
                    match self.choose(&state, rel) {
                        Choice::Package(p) => {
                            chosen = Some(p);
                            break;
                        }
                        Choice::Conflict(sel) => conflict = conflict.or(Some(sel)),
                        Choice::None => {}
                    }
                }
                match (chosen, conflict) {
                    (Some(p), _) => state.select(p, Some(&pkg.name)),
                    (None, Some(sel)) => {
                        return Err(ResolveError::Conflict {
                            chain: state.chain(&pkg.name),
                            relation: format_alternatives(group),
                            selected: format!("{} {}", sel.name, sel.version),
                            selected_for: state.reason(&sel.name),
                        })
                    }
                    (None, None) => {
                        return Err(ResolveError::Unsatisfiable {
                            chain: state.chain(&pkg.name),
                            relation: format_alternatives(group),
                            origin: self.origin.clone(),
                        })
                    }
                }
            }
        }
        let why: BTreeMap<String, String> = state
            .selected
            .keys()
            .map(|name| (name.to_string(), state.reason(name)))
            .collect();
        let packages = state
            .selected
            .values()
            .map(|p| ResolvedPackage {
                package: (*p).clone(),
                reason: why[&p.name].clone(),
            })
            .collect();
        Ok(Resolution { packages, why })
    }

    /// Picks the package that should satisfy `rel` given what is selected.
    fn choose(&self, state: &State<'a>, rel: &Relation) -> Choice<'a> {
        let mut conflict = None;
        if let Some(p) = self
            .by_name
            .get(rel.name.as_str())
            .and_then(|v| v.iter().find(|p| self.real_matches(rel, p)))
        {
            match state.selected.get(p.name.as_str()) {
                Some(sel) if !std::ptr::eq(*sel, *p) && !self.real_matches(rel, sel) => conflict = Some(*sel),
                _ => return Choice::Package(p),
            }
        }
        if let Some(provs) = self.providers.get(rel.name.as_str()) {
            let mut usable: Vec<&Provider> = provs.iter().filter(|prov| Self::provider_matches(rel, prov)).collect();
            usable.sort_by(|a, b| Self::provider_rank(a.package).cmp(&Self::provider_rank(b.package)));
            for prov in usable {
                match state.selected.get(prov.package.name.as_str()) {
                    Some(sel) if !std::ptr::eq(*sel, prov.package) => conflict = conflict.or(Some(*sel)),
                    _ => return Choice::Package(prov.package),
                }
            }
        }
        match conflict {
            Some(sel) => Choice::Conflict(sel),
            None => Choice::None,
        }
    }
}

enum Choice<'a> {
    Package(&'a Package),
    Conflict(&'a Package),
    None,
}

struct State<'a> {
    selected: BTreeMap<&'a str, &'a Package>,
    parent: BTreeMap<&'a str, Option<String>>,
    queue: VecDeque<&'a Package>,
}

impl<'a> State<'a> {
    fn select(&mut self, p: &'a Package, parent: Option<&str>) {
        if self.selected.insert(p.name.as_str(), p).is_none() {
            self.parent.insert(p.name.as_str(), parent.map(str::to_string));
            self.queue.push_back(p);
        }
    }

    /// True when a selected package meets `rel`, by name or through `Provides`.
    fn satisfied(&self, resolver: &Resolver<'a>, rel: &Relation) -> bool {
        if let Some(p) = self.selected.get(rel.name.as_str()) {
            if resolver.real_matches(rel, p) {
                return true;
            }
        }
        resolver.providers.get(rel.name.as_str()).is_some_and(|provs| {
            provs.iter().any(|prov| {
                self.selected
                    .get(prov.package.name.as_str())
                    .is_some_and(|sel| std::ptr::eq(*sel, prov.package))
                    && Resolver::provider_matches(rel, prov)
            })
        })
    }

    /// Requested package first, `name` last.
    fn chain(&self, name: &str) -> Vec<String> {
        let mut chain = vec![name.to_string()];
        let mut cursor = name.to_string();
        while let Some(Some(parent)) = self.parent.get(cursor.as_str()) {
            if chain.contains(parent) {
                break;
            }
            chain.push(parent.clone());
            cursor = parent.clone();
        }
        chain.reverse();
        chain
    }

    fn reason(&self, name: &str) -> String {
        match self.parent.get(name) {
            Some(Some(parent)) => format!("dependency of {parent}"),
            _ => "requested".to_string(),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_relation().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an index from compact lines: `name version arch ; Field: value ; ...`.
    fn index(spec: &str) -> PackageIndex {
        let mut text = String::new();
        for (i, line) in spec.lines().map(str::trim).filter(|l| !l.is_empty()).enumerate() {
            let mut parts = line.split(" ; ");
            let mut head = parts.next().unwrap().split_whitespace();
            let (name, version, arch) = (
                head.next().unwrap(),
                head.next().unwrap(),
                head.next().unwrap_or("amd64"),
            );
            text.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nFilename: pool/{name}_{version}.deb\nSize: {}\nSHA256: {:064x}\n",
                1000 + i,
                i
            ));
            for field in parts {
                text.push_str(field);
                text.push('\n');
            }
            text.push('\n');
        }
        PackageIndex::parse(&text).unwrap()
    }

    fn names(r: &Resolution) -> Vec<String> {
        r.packages
            .iter()
            .map(|p| format!("{} {}", p.package.name, p.package.version))
            .collect()
    }

    #[test]
    fn closure_follows_depends_and_pre_depends_only() {
        let idx = index(
            "app 1.0 ; Depends: liba (>= 1.0), libb ; Pre-Depends: helper ; Recommends: fluff ; Suggests: more
             liba 0.9 ; Depends: libc6
             liba 1.2 ; Depends: libc6 (>= 2.30)
             libb 1.0 all
             helper 1 all
             fluff 1
             more 1
             libc6 2.36-9",
        );
        let r = Resolver::new(&idx, "amd64").resolve(&[Request::new("app")]).unwrap();
        assert_eq!(
            names(&r),
            ["app 1.0", "helper 1", "liba 1.2", "libb 1.0", "libc6 2.36-9"]
        );
        assert_eq!(r.why["app"], "requested");
        assert_eq!(r.why["libc6"], "dependency of liba");
        assert_eq!(r.why["helper"], "dependency of app");
        assert_eq!(r.get("liba").unwrap().version.to_string(), "1.2");
        assert_eq!(r.download_size(), [1000, 1002, 1003, 1004, 1007].iter().sum::<u64>());
    }

    #[test]
    fn constraints_pick_the_best_satisfying_version() {
        let idx = index(
            "app 1 ; Depends: lib (<< 2.0)
             lib 1.5
             lib 2.1
             lib 1.9",
        );
        let r = Resolver::new(&idx, "amd64").resolve(&[Request::new("app")]).unwrap();
        assert_eq!(r.get("lib").unwrap().version.to_string(), "1.9");
        let r = Resolver::new(&idx, "amd64")
            .resolve(&[Request::exact("lib", "1.5").unwrap()])
            .unwrap();
        assert_eq!(names(&r), ["lib 1.5"]);
    }

    #[test]
    fn alternatives_prefer_selected_then_first_satisfiable() {
        let idx = index(
            "app 1 ; Depends: missing | second | third
             other 1 ; Depends: third
             second 1
             third 1",
        );
        let r = Resolver::new(&idx, "amd64").resolve(&[Request::new("app")]).unwrap();
        assert_eq!(names(&r), ["app 1", "second 1"]);
        // With `third` already selected, app's group is satisfied by it.
        let r = Resolver::new(&idx, "amd64")
            .resolve(&[Request::new("other"), Request::new("app")])
            .unwrap();
        assert_eq!(names(&r), ["app 1", "other 1", "third 1"]);
    }

    #[test]
    fn virtual_packages_and_versioned_provides() {
        let idx = index(
            "app 1 ; Depends: awk, mta (>= 2)
             mawk 1.3 ; Provides: awk ; Priority: required
             gawk 5.2 ; Provides: awk ; Priority: optional
             old-mta 1 ; Provides: mta
             new-mta 1 ; Provides: mta (= 2.5)",
        );
        let r = Resolver::new(&idx, "amd64").resolve(&[Request::new("app")]).unwrap();
        assert_eq!(names(&r), ["app 1", "mawk 1.3", "new-mta 1"]);
        assert_eq!(r.why["mawk"], "dependency of app");
        // A virtual name can be requested too.
        let r = Resolver::new(&idx, "amd64")
            .resolve(&[Request::new("gawk"), Request::new("awk")])
            .unwrap();
        assert_eq!(names(&r), ["gawk 5.2"]);
    }

    #[test]
    fn architecture_filtering_and_qualifiers() {
        let idx = index(
            "app 1 ; Depends: python3:any, tool:native, libx:i386 | liby
             python3 3.11 ; Multi-Arch: allowed
             tool 1
             libx 1 i386
             liby 1
             perl 5 ; Multi-Arch: foreign
             needsperl 1 ; Depends: perl:any",
        );
        let r = Resolver::new(&idx, "amd64").resolve(&[Request::new("app")]).unwrap();
        assert_eq!(names(&r), ["app 1", "liby 1", "python3 3.11", "tool 1"]);
        let e = Resolver::new(&idx, "amd64")
            .resolve(&[Request::new("needsperl")])
            .unwrap_err();
        assert!(matches!(e, ResolveError::Unsatisfiable { .. }), "{e}");
        let e = Resolver::new(&idx, "amd64")
            .resolve(&[Request::new("libx")])
            .unwrap_err();
        assert!(
            matches!(e, ResolveError::NotFound { .. }),
            "i386 packages are not installable on amd64: {e}"
        );
    }

    #[test]
    fn errors_name_the_chain() {
        let idx = index(
            "docker.io 20 ; Depends: containerd
             containerd 1.6 ; Depends: libfoo (>= 2)
             libfoo 1",
        );
        let e = Resolver::new(&idx, "amd64")
            .with_origin("bookworm/main")
            .resolve(&[Request::new("docker.io")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "containerd depends on libfoo (>= 2), which no package in bookworm/main provides \
             (dependency chain: docker.io -> containerd)"
        );
        let e = Resolver::new(&idx, "amd64")
            .resolve(&[Request::new("nope")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "requested package nope is not in the package index; check the name and version, or add the suite or component that has it"
        );
    }

    #[test]
    fn version_conflicts_are_reported() {
        let idx = index(
            "a 1 ; Depends: lib (<< 2)
             b 1 ; Depends: lib (>= 2)
             lib 1
             lib 2",
        );
        let e = Resolver::new(&idx, "amd64")
            .resolve(&[Request::new("a"), Request::new("b")])
            .unwrap_err();
        assert!(matches!(e, ResolveError::Conflict { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("lib 1 was already selected (for dependency of a)"),
            "{e}"
        );
    }

    #[test]
    fn cycles_terminate_and_output_is_deterministic() {
        let idx = index(
            "a 1 ; Depends: b
             b 1 ; Depends: c
             c 1 ; Depends: a",
        );
        let one = Resolver::new(&idx, "amd64").resolve(&[Request::new("c")]).unwrap();
        let two = Resolver::new(&idx, "amd64").resolve(&[Request::new("c")]).unwrap();
        assert_eq!(one, two);
        assert_eq!(names(&one), ["a 1", "b 1", "c 1"]);
        assert_eq!(one.why["a"], "dependency of c");
    }
}
