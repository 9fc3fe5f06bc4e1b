//! `chroma-ha check`: compares the content of Chroma servers directly (never
//! through the gateway) with [`crate::check`].
//!
//! Exit codes: 0 the servers are identical, 1 they differ, 2 the check could
//! not be carried out (bad arguments, a server unreachable, an unexpected
//! answer).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::check::{
    compare_servers, discover_scopes, AuthHeader, CheckError, CheckOptions, CheckReport,
    DEFAULT_TENANT,
};

/// Arguments of `chroma-ha check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Base URL of a Chroma server (not the gateway); repeat for each server.
    /// The first one is the reference.
    #[arg(long = "server", value_name = "URL", required = true)]
    pub servers: Vec<String>,
    /// Tenant to compare; repeat for several. Default: default_tenant.
    #[arg(long = "tenant", value_name = "T")]
    pub tenants: Vec<String>,
    /// Compare only this database (of every tenant). Default: every database
    /// found on any server.
    #[arg(long, value_name = "D")]
    pub database: Option<String>,
    /// Header sent to the servers, e.g. 'x-chroma-token: secret'. Given once,
    /// it goes to every server; given once per server, the n-th header goes to
    /// the n-th server.
    #[arg(long = "header", value_name = "'Name: value'")]
    pub headers: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each request.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub timeout: f64,
    /// Records fetched per request.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub page_size: u32,
    /// Do not compare the collections' index schema.
    #[arg(long)]
    pub ignore_schema: bool,
    /// Do not compare the collections' configuration (index settings).
    #[arg(long)]
    pub ignore_configuration: bool,
    /// TLS for https:// servers.
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// Runs `chroma-ha check`.
pub fn run(args: CheckArgs) -> ExitCode {
    let opts = match options(&args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("chroma-ha check: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chroma-ha check: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let tenants = if args.tenants.is_empty() {
        vec![DEFAULT_TENANT.to_string()]
    } else {
        args.tenants.clone()
    };
    let result = runtime.block_on(async {
        let scopes = match &args.database {
            Some(db) => tenants.iter().map(|t| (t.clone(), db.clone())).collect(),
            None => discover_scopes(&args.servers, &tenants, &opts).await?,
        };
        compare_servers(&args.servers, &scopes, &opts).await
    });
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            if args.json {
                println!("{}", json!({"identical": null, "error": e.to_string()}));
            }
            eprintln!("chroma-ha check: {}", describe(&e));
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{:#}", report_json(&report));
    } else {
        print!("{report}");
    }
    if report.identical() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Builds the check options from the arguments.
fn options(args: &CheckArgs) -> Result<CheckOptions, String> {
    if args.servers.len() < 2 {
        return Err("give at least two servers to compare (--server URL --server URL)".into());
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err("--timeout must be a positive number of seconds".into());
    }
    if args.page_size == 0 {
        return Err("--page-size must be at least 1".into());
    }
    let headers = args
        .headers
        .iter()
        .map(|h| AuthHeader::parse(h).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let auth = match headers.len() {
        0 => Vec::new(),
        1 => vec![headers.first().cloned(); args.servers.len()],
        n if n == args.servers.len() => headers.into_iter().map(Some).collect(),
        n => {
            return Err(format!(
                "--header given {n} times for {} servers: give it once (for every server) \
                 or once per server",
                args.servers.len()
            ))
        }
    };
    Ok(CheckOptions {
        page_size: args.page_size,
        compare_configuration: !args.ignore_configuration,
        compare_schema: !args.ignore_schema,
        auth,
        request_timeout: Duration::from_secs_f64(args.timeout.min(86_400.0)),
        tls: args.tls.client_tls().map_err(|e| e.to_string())?,
        ..CheckOptions::default()
    })
}

/// The error with its causes (reqwest hides "connection refused" in them).
fn describe(e: &CheckError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The report as JSON.
fn report_json(report: &CheckReport) -> Value {
    let differences: Vec<Value> = report
        .differences
        .iter()
        .map(|d| {
            json!({
                "tenant": d.tenant,
                "database": d.database,
                "collection": d.collection,
                "record_id": d.record_id,
                "kind": d.kind.as_str(),
                "server": d.server,
                "server_url": report.servers.get(d.server),
                "reference": d.reference,
                "reference_url": report.servers.get(d.reference),
                "detail": d.detail,
            })
        })
        .collect();
    json!({
        "identical": report.identical(),
        "summary": report.summary(),
        "servers": report.servers,
        "scopes": report
            .scopes
            .iter()
            .map(|(t, d)| json!({"tenant": t, "database": d}))
            .collect::<Vec<_>>(),
        "collections": report.collections,
        "records": report.records,
        "collections_per_server": report.collections_per_server,
        "records_per_server": report.records_per_server,
        "difference_count": report.difference_count(),
        "differences": differences,
        "omitted_differences": report.omitted_differences,
        "tolerance": report.tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CheckArgs,
    }

    fn parse(argv: &[&str]) -> CheckArgs {
        let mut full = vec!["check"];
        full.extend_from_slice(argv);
        Wrapper::parse_from(full).args
    }

    #[test]
    fn one_header_goes_to_every_server() {
        let args = parse(&[
            "--server",
            "http://a",
            "--server",
            "http://b",
            "--header",
            "x-chroma-token: s3cret",
        ]);
        let opts = options(&args).expect("valid");
        assert_eq!(opts.auth.len(), 2);
        assert!(opts
            .auth
            .iter()
            .all(|h| h.as_ref().is_some_and(|h| h.value == "s3cret")));
    }

    #[test]
    fn header_count_must_match_servers_and_one_server_is_not_enough() {
        let args = parse(&[
            "--server", "http://a", "--server", "http://b", "--server", "http://c", "--header",
            "a: 1", "--header", "b: 2",
        ]);
        assert!(options(&args)
            .unwrap_err()
            .contains("2 times for 3 servers"));
        let args = parse(&["--server", "http://a"]);
        assert!(options(&args).unwrap_err().contains("at least two"));
        let args = parse(&[
            "--server", "http://a", "--server", "http://b", "--header", "bad",
        ]);
        assert!(options(&args).unwrap_err().contains("Name: value"));
    }

    #[test]
    fn json_report_lists_differences() {
        let report = CheckReport {
            servers: vec!["http://a".into(), "http://b".into()],
            scopes: vec![("t".into(), "d".into())],
            differences: vec![crate::check::Difference {
                tenant: "t".into(),
                database: "d".into(),
                collection: Some("c".into()),
                record_id: Some("r1".into()),
                kind: crate::check::DifferenceKind::MissingRecord,
                server: 1,
                reference: 0,
                detail: "missing".into(),
            }],
            ..CheckReport::default()
        };
        let v = report_json(&report);
        assert_eq!(v["identical"], json!(false));
        assert_eq!(v["differences"][0]["kind"], json!("missing-record"));
        assert_eq!(v["differences"][0]["server_url"], json!("http://b"));
        assert_eq!(v["scopes"][0]["database"], json!("d"));
    }
}
