//! Scenarios (DESIGN §8): their names, their `count`, and the counters a trade uses them up by.
//! What each one does is written once, in the `sandbox` module's documentation.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// How the sandbox behaves for one trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Approve,
    Decline,
    ShopperCancel,
    ApprovalLate,
    ApprovalAmountMismatch,
    BadMac,
    WebhookFirst,
    ReturnLost,
    WebhookStorm,
    WebhookAmountMismatch,
    CancelReplyLost,
    CancelFails,
    WebhookFails,
    MalformedReply,
    ApprovalOtherTrade,
}

impl Scenario {
    pub const ALL: [Scenario; 15] = [
        Scenario::Approve,
        Scenario::Decline,
        Scenario::ShopperCancel,
        Scenario::ApprovalLate,
        Scenario::ApprovalAmountMismatch,
        Scenario::BadMac,
        Scenario::WebhookFirst,
        Scenario::ReturnLost,
        Scenario::WebhookStorm,
        Scenario::WebhookAmountMismatch,
        Scenario::CancelReplyLost,
        Scenario::CancelFails,
        Scenario::WebhookFails,
        Scenario::MalformedReply,
        Scenario::ApprovalOtherTrade,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Approve => "approve",
            Scenario::Decline => "decline",
            Scenario::ShopperCancel => "shopper_cancel",
            Scenario::ApprovalLate => "approval_late",
            Scenario::ApprovalAmountMismatch => "approval_amount_mismatch",
            Scenario::BadMac => "bad_mac",
            Scenario::WebhookFirst => "webhook_first",
            Scenario::ReturnLost => "return_lost",
            Scenario::WebhookStorm => "webhook_storm",
            Scenario::WebhookAmountMismatch => "webhook_amount_mismatch",
            Scenario::CancelReplyLost => "cancel_reply_lost",
            Scenario::CancelFails => "cancel_fails",
            Scenario::WebhookFails => "webhook_fails",
            Scenario::MalformedReply => "malformed_reply",
            Scenario::ApprovalOtherTrade => "approval_other_trade",
        }
    }

    /// `count` when the request gives none; 0 where the scenario has no use for it.
    pub fn default_count(self) -> u64 {
        match self {
            // Past the 30 s KICC asks clients to wait (spec 02), so a client times out.
            Scenario::ApprovalLate => 35_000,
            Scenario::WebhookStorm => 5,
            Scenario::CancelReplyLost
            | Scenario::CancelFails
            | Scenario::WebhookFails
            | Scenario::MalformedReply => 1,
            _ => 0,
        }
    }

    /// What the console says about it.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Approve => "everything works",
            Scenario::Decline => "the approval answers 5101 (declined)",
            Scenario::ShopperCancel => "Pay returns W002, as if the shopper cancelled",
            Scenario::ApprovalLate => "approves, replies after `count` ms",
            Scenario::ApprovalAmountMismatch => "approves one minor unit more than ordered",
            Scenario::BadMac => "the approval's msgAuthValue does not verify",
            Scenario::WebhookFirst => "approves on Pay; the webhook arrives before the returnUrl",
            Scenario::ReturnLost => "approves on Pay; the browser never reaches the returnUrl",
            Scenario::WebhookStorm => "`count` copies of each webhook, at once",
            Scenario::WebhookAmountMismatch => "the approval webhook says one minor unit more",
            Scenario::CancelReplyLost => "the next `count` cancels happen, their replies are lost",
            Scenario::CancelFails => "the next `count` cancels answer 5102 and change nothing",
            Scenario::WebhookFails => "the next `count` webhook attempts are lost on the way",
            Scenario::MalformedReply => "the next `count` API replies are not JSON",
            Scenario::ApprovalOtherTrade => {
                "approves, but the reply names another trade and order (validly signed for it)"
            }
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of DESIGN §8's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScenario(pub String);

impl fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        write!(
            f,
            "`{}` is not a scenario; use one of {}",
            self.0,
            names.join(", ")
        )
    }
}

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| UnknownScenario(s.to_owned()))
    }
}

/// A scenario with its `count`. For the counted scenarios (`cancel_reply_lost`, `cancel_fails`,
/// `webhook_fails`, `malformed_reply`) `count` is what is left; at 0 the trade behaves as
/// `approve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ScenarioSetting {
    pub scenario: Scenario,
    pub count: u64,
}

impl Default for ScenarioSetting {
    fn default() -> Self {
        Self::new(Scenario::Approve, None)
    }
}

impl ScenarioSetting {
    pub fn new(scenario: Scenario, count: Option<u64>) -> Self {
        Self {
            scenario,
            count: count.unwrap_or_else(|| scenario.default_count()),
        }
    }

    pub fn is(&self, scenario: Scenario) -> bool {
        self.scenario == scenario
    }

    /// Uses up one of a counted scenario: true when `scenario` is set and some is left.
    pub fn take(&mut self, scenario: Scenario) -> bool {
        if self.scenario == scenario && self.count > 0 {
            self.count -= 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.name())
            );
        }
        let err = "approve_later".parse::<Scenario>().unwrap_err().to_string();
        assert!(
            err.contains("approve_later") && err.contains("webhook_storm"),
            "{err}"
        );
    }

    #[test]
    fn counted_scenarios_run_out() {
        let mut s = ScenarioSetting::new(Scenario::CancelFails, Some(2));
        assert!(!s.take(Scenario::WebhookFails));
        assert!(s.take(Scenario::CancelFails));
        assert!(s.take(Scenario::CancelFails));
        assert!(!s.take(Scenario::CancelFails));
        assert_eq!(
            ScenarioSetting::new(Scenario::WebhookStorm, None).count,
            5,
            "default count"
        );
    }
}
