//! Builds the ui service's page: installs its front-end dependencies from
//! npm (`npm ci` in `web/`, when `web/node_modules` is missing or older than
//! the lockfile), then writes into `OUT_DIR` the page with its import map,
//! the Socket.IO client bundle, and (as `MICROFLACK_*` build variables) the
//! bundle's version and the hash of the page's inline script for its
//! Content-Security-Policy.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The page's own files, in `web/src`.
const SOURCES: &[&str] = &[
    "index.html",
    "app.js",
    "api.js",
    "live.js",
    "views.js",
    "styles.css",
];

const NO_NPM: &str = "npm is needed to build MicroFlack's page (its front-end dependencies \
come from npm): install Node.js and npm (Debian/Ubuntu: `apt-get install nodejs npm`; \
elsewhere see nodejs.org), then build again";

fn main() {
    if let Err(e) = build() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let web = manifest.join("web");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    for source in SOURCES {
        println!("cargo:rerun-if-changed=web/src/{source}");
    }

    let client = web.join("node_modules/socket.io-client");
    if npm_ci_due(&web, &client) {
        npm_ci(&web)?;
    }
    let bundle_path = client.join("dist/socket.io.esm.min.js");
    println!("cargo:rerun-if-changed={}", bundle_path.display());

    let version = read(&client.join("package.json")).and_then(|text| {
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())
    })?["version"]
        .as_str()
        .ok_or("socket.io-client's package.json has no version")?
        .to_string();
    // The source map is not served: drop the line that points at it.
    let bundle: String = read(&bundle_path)?
        .lines()
        .filter(|line| !line.starts_with("//# sourceMappingURL="))
        .collect::<Vec<_>>()
        .join("\n");
    write(&out.join("socket.io.esm.min.js"), &bundle)?;

    let import_map = format!(
        r#"{{"imports":{{"socket.io-client":"/static/vendor/socket.io-{version}.esm.min.js"}}}}"#
    );
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&import_map));
    let page = read(&web.join("src/index.html"))?.replace("{{IMPORT_MAP}}", &import_map);
    write(&out.join("index.html"), &page)?;
    println!("cargo:rustc-env=MICROFLACK_SOCKET_IO_VERSION={version}");
    println!("cargo:rustc-env=MICROFLACK_IMPORT_MAP_HASH=sha256-{hash}");
    Ok(())
}

/// node_modules is missing, or older than the lockfile.
fn npm_ci_due(web: &Path, client: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let installed = modified(&web.join("node_modules/.package-lock.json"));
    let locked = modified(&web.join("package-lock.json"));
    !client.join("package.json").is_file() || installed < locked
}

fn npm_ci(web: &Path) -> Result<(), String> {
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(web)
        // Cargo reads a build script's stdout: npm's goes to stderr.
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("cannot run npm ({e}): {NO_NPM}"))?;
    if !status.success() {
        return Err(format!(
            "`npm ci` in {} failed ({status}); check the network access to the npm registry, or {NO_NPM}",
            web.display()
        ));
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
