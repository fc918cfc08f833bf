//! The sandbox's settings: the one merchant it knows (the same variables and sandbox defaults
//! as the app, DESIGN §8) and its own timings.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::config::{Config, ConfigError, SandboxSettings};

/// KICC answers webhooks' receivers within 10 s (spec 04/05): the per-attempt HTTP timeout.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sandbox needs to act as KICC for one merchant.
pub struct SandboxConfig {
    /// `KICC_MALL_ID`.
    pub mall_id: String,
    /// `KICC_SECRET_KEY`: the msgAuthValue key.
    pub secret_key: SecretString,
    pub kiccpay: SandboxKiccPay,
    /// First webhook resend delay; doubles per attempt, capped at 10 minutes.
    pub webhook_backoff: Duration,
    /// `None`: the sandbox never approves on its own.
    pub auto_approve: Option<Duration>,
    /// Per-attempt webhook timeout ([`WEBHOOK_TIMEOUT`] unless a test shortens it).
    pub webhook_timeout: Duration,
}

/// The KICC Pay terminal (spec 03) and its keys.
pub struct SandboxKiccPay {
    pub tid: String,
    pub svc_id: String,
    pub bizr_no: String,
    pub channel_id: String,
    pub secret_key: SecretString,
    pub aes_key: SecretBox<[u8; 32]>,
    pub aes_iv: SecretBox<[u8; 16]>,
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("mall_id", &self.mall_id)
            .field("secret_key", &"[REDACTED]")
            .field("kiccpay.tid", &self.kiccpay.tid)
            .field("kiccpay.svc_id", &self.kiccpay.svc_id)
            .field("kiccpay.bizr_no", &self.kiccpay.bizr_no)
            .field("kiccpay.channel_id", &self.kiccpay.channel_id)
            .field("webhook_backoff", &self.webhook_backoff)
            .field("auto_approve", &self.auto_approve)
            .field("webhook_timeout", &self.webhook_timeout)
            .finish()
    }
}

/// The variables the standalone sandbox reads; everything else the app reads (database, live
/// mode, admin password, …) is not its business and is ignored.
const SANDBOX_VARS: &[&str] = &[
    "KICC_MALL_ID",
    "KICC_SECRET_KEY",
    "KICCPAY_TID",
    "KICCPAY_SVC_ID",
    "KICCPAY_BIZR_NO",
    "KICCPAY_CHANNEL_ID",
    "KICCPAY_SECRET_KEY",
    "KICCPAY_AES_KEY",
    "KICCPAY_AES_IV",
    "SANDBOX_WEBHOOK_BACKOFF_MS",
    "SANDBOX_AUTO_APPROVE_MS",
];

impl SandboxConfig {
    /// The merchant the app itself uses (mounted sandbox).
    pub fn from_app_config(config: &Config) -> Self {
        let k = &config.kiccpay;
        Self {
            mall_id: config.mall_id.clone(),
            secret_key: config.secret_key.clone(),
            kiccpay: SandboxKiccPay {
                tid: k.tid.clone(),
                svc_id: k.svc_id.clone(),
                bizr_no: k.bizr_no.clone(),
                channel_id: k.channel_id.clone(),
                secret_key: k.secret_key.clone(),
                aes_key: SecretBox::new(Box::new(*k.aes_key.expose_secret())),
                aes_iv: SecretBox::new(Box::new(*k.aes_iv.expose_secret())),
            },
            webhook_backoff: config.sandbox.webhook_backoff,
            auto_approve: config.sandbox.auto_approve,
            webhook_timeout: WEBHOOK_TIMEOUT,
        }
    }

    /// The standalone sandbox (`kicc-checkout sandbox`): the merchant variables with their
    /// sandbox defaults, validated exactly as the app validates them, whatever the app's mode
    /// variables say (`KICC_API_BASE` pointing at this sandbox is the normal case).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| match std::env::var(var) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(ConfigError::new(var, "is not valid UTF-8"))
            }
        })
    }

    /// As [`SandboxConfig::from_env`], reading through `lookup`.
    pub fn from_lookup(
        lookup: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        // The app's reader in sandbox mode, shown only the sandbox's variables.
        let config = Config::from_lookup(|var| {
            if SANDBOX_VARS.contains(&var) {
                lookup(var)
            } else {
                Ok(None)
            }
        })?;
        Ok(Self::from_app_config(&config))
    }

    /// Settings as given, for tests that build a sandbox directly.
    pub fn with_settings(mut self, settings: SandboxSettings) -> Self {
        self.webhook_backoff = settings.webhook_backoff;
        self.auto_approve = settings.auto_approve;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sandbox(vars: &[(&'static str, &str)]) -> Result<SandboxConfig, ConfigError> {
        let map: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        SandboxConfig::from_lookup(|var| Ok(map.get(var).cloned()))
    }

    #[test]
    fn standalone_ignores_the_apps_live_mode_and_keeps_sandbox_defaults() {
        let c = sandbox(&[
            ("KICC_API_BASE", "http://127.0.0.1:9999"),
            ("DATABASE_URL", "mysql://nope"),
            ("ADMIN_PASSWORD", "x"),
        ])
        .unwrap();
        assert_eq!(c.mall_id, crate::config::SANDBOX_MALL_ID);
        assert_eq!(
            c.secret_key.expose_secret(),
            crate::config::SANDBOX_SECRET_KEY
        );
        assert_eq!(c.kiccpay.tid, crate::config::SANDBOX_KICCPAY_TID);
        assert_eq!(c.webhook_backoff, Duration::from_millis(2000));
        assert_eq!(c.auto_approve, Some(Duration::from_secs(10)));
        assert_eq!(c.webhook_timeout, WEBHOOK_TIMEOUT);
    }

    #[test]
    fn standalone_reads_the_merchant_and_names_a_bad_variable() {
        let c = sandbox(&[
            ("KICC_MALL_ID", "M0000001"),
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
            ("SANDBOX_AUTO_APPROVE_MS", "0"),
        ])
        .unwrap();
        assert_eq!(c.mall_id, "M0000001");
        assert_eq!(c.webhook_backoff, Duration::from_millis(1));
        assert_eq!(c.auto_approve, None);
        for (var, value) in [
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "soon"),
            ("SANDBOX_AUTO_APPROVE_MS", "-3"),
            ("KICCPAY_AES_KEY", "abcd"),
            ("KICC_MALL_ID", "MUCH-TOO-LONG"),
        ] {
            assert_eq!(sandbox(&[(var, value)]).unwrap_err().var, var);
        }
        assert!(!format!("{c:?}").contains(crate::config::SANDBOX_SECRET_KEY));
    }
}
