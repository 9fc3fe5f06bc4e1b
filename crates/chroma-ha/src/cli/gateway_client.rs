//! A small async client of a running gateway for the commands that drive
//! one (`backup`, `restore --join`, `rebuild`): `/status` and the admin API with its token.

use serde_json::Value;
use std::time::Duration;

/// A client of one gateway.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Arguments naming a gateway and its admin token.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Base URL of the gateway.
    #[arg(
        long = "gateway",
        value_name = "URL",
        env = "CHROMA_HA_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub gateway: String,
    /// The gateway's admin token (admin_token).
    #[arg(long, value_name = "TOKEN", env = "CHROMA_HA_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
}

impl GatewayArgs {
    /// A client of the gateway these arguments name, with `tls`.
    pub fn client(&self, tls: &super::TlsArgs) -> Result<GatewayClient, String> {
        let tls = tls.client_tls().map_err(|e| e.to_string())?;
        GatewayClient::new(&self.gateway, self.admin_token.clone(), &tls)
    }
}

impl GatewayClient {
    /// A client of the gateway at `base`, sending `token` to `/admin/…`.
    pub fn new(
        base: &str,
        token: Option<String>,
        tls: &crate::tls::ClientTls,
    ) -> Result<Self, String> {
        let http = tls
            .apply(reqwest::Client::builder())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        if path.starts_with("/admin/") {
            if let Some(token) = &self.token {
                req = req.bearer_auth(token);
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the gateway at {url}: {e}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the answer of {url}: {e}"))?;
        let value: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned())
        });
        if !status.is_success() {
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_string);
            let hint = if status.as_u16() == 401
                || status.as_u16() == 404 && path.starts_with("/admin/")
            {
                " (is --admin-token / CHROMA_HA_ADMIN_TOKEN right, and admin_token set on the gateway?)"
            } else {
                ""
            };
            return Err(format!("{url} answered {status}: {message}{hint}"));
        }
        Ok(value)
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<Value, String> {
        self.call(reqwest::Method::GET, "/status", None).await
    }

    /// `GET` an admin path (e.g. `/admin/tenants`).
    pub async fn admin_get(&self, path: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST` an admin path (e.g. `/admin/servers/NAME/pause`).
    pub async fn admin_post(&self, path: &str) -> Result<Value, String> {
        self.call(reqwest::Method::POST, path, None).await
    }

    /// The tenants the gateway knows of (`GET /admin/tenants`).
    pub async fn tenants(&self) -> Result<Vec<String>, String> {
        let known = self.admin_get("/admin/tenants").await?;
        Ok(known["tenants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect())
    }

    /// `POST` a JSON body to an admin path.
    pub async fn admin_post_json(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// The instance named `name` in a `/status` document.
pub fn instance<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status
        .get("instances")?
        .as_array()?
        .iter()
        .find(|i| i.get("name").and_then(Value::as_str) == Some(name))
}

/// Percent-encodes a server name for a path segment.
pub fn segment(name: &str) -> String {
    crate::check::encode_segment(name)
}
