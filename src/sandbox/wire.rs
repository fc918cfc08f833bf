//! KICC's wire format as the sandbox reads and writes it: the request and response bodies of
//! spec files 01–06 and of docs/KICC-ASSUMPTIONS.md, field names exactly as KICC spells them.
//! Deliberately independent of `crate::kicc`'s types, so that contract tests between the client
//! and the sandbox compare two implementations of the protocol, not one with itself.
//!
//! Requests are read leniently (every field optional, unknown fields ignored, amounts as number
//! or string) and then validated for meaning by the ledger, which answers KICC's codes.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Response codes the sandbox answers (docs/KICC-ASSUMPTIONS.md, "Response codes").
pub mod code {
    pub const SUCCESS: &str = "0000";
    /// Missing field, wrong type, value outside its set.
    pub const MALFORMED: &str = "1001";
    /// Longer than KICC allows, or not English where English is required.
    pub const TOO_LONG: &str = "1002";
    /// Unknown merchant (`mallId`, or KICC Pay `tid`/`svcId`/`bizrNo`).
    pub const UNKNOWN_MERCHANT: &str = "2001";
    pub const BAD_MSG_AUTH_VALUE: &str = "2002";
    pub const BAD_SIGNATURE: &str = "2003";
    /// This `shopTransactionId` was already used today.
    pub const DUPLICATE_REQUEST: &str = "3001";
    /// A trade already exists for this `shopOrderNo` (spec 01: "Must be Unique").
    pub const DUPLICATE_ORDER: &str = "3002";
    pub const UNKNOWN_TRANSACTION: &str = "4001";
    pub const EXCEEDS_REMAINING: &str = "4002";
    pub const WRONG_STATE: &str = "4003";
    pub const FOREIGN_AUTHORIZATION: &str = "4004";
    /// The amount does not match the transaction (KICC Pay `trxAmt` ≠ the window's amount).
    pub const AMOUNT_MISMATCH: &str = "4005";
    pub const DECLINED: &str = "5101";
    pub const CANCEL_FAILED: &str = "5102";
    /// returnUrl: the shopper cancelled in the payment window.
    pub const SHOPPER_CANCELLED: &str = "W002";
}

/// An amount in minor units that KICC sends as a number or as a string (`"51004"`, spec 02's
/// example). Fractions, signs other than `-` and anything else are a type error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireAmount(pub i64);

impl<'de> Deserialize<'de> for WireAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor;
        impl Visitor<'_> for AmountVisitor {
            type Value = WireAmount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer amount, as a number or a string of digits")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireAmount, E> {
                Ok(WireAmount(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireAmount, E> {
                i64::try_from(v)
                    .map(WireAmount)
                    .map_err(|_| E::custom("amount too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireAmount, E> {
                Err(E::custom(format!(
                    "{v} is not a whole number of minor units"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireAmount, E> {
                let digits = v.strip_prefix('-').unwrap_or(v);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::custom(format!("`{v}` is not an integer amount")));
                }
                v.parse()
                    .map(WireAmount)
                    .map_err(|_| E::custom("amount too large"))
            }
        }
        deserializer.deserialize_any(AmountVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// WeChat Pay: create transaction (spec 01)

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTradeRequest {
    pub mall_id: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub shop_order_no: Option<String>,
    pub goods_name: Option<String>,
    pub return_url: Option<String>,
    pub trade_type: Option<String>,
    pub notify_url: Option<String>,
    pub amount_info: Option<CreateAmountInfo>,
    pub customer_info: Option<CustomerInfo>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAmountInfo {
    pub currency: Option<String>,
    pub total_amount: Option<WireAmount>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_mail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_contact_no: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_addr: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTradeResponse {
    pub res_cd: String,
    pub res_msg: String,
    pub shop_transaction_id: String,
    pub mall_id: String,
    pub pg_cno: String,
    pub payment_page_url: String,
}

// ---------------------------------------------------------------------------------------------
// Payment approval v2 (spec 02)

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequest {
    pub mall_id: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub authorization_id: Option<String>,
    pub shop_order_no: Option<String>,
    pub approval_req_date: Option<String>,
}

/// Spec 02's response; also the approval shape of `retrieveTransaction`, without
/// `msgAuthValue` (spec 06).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalResponse {
    pub res_cd: String,
    pub res_msg: String,
    pub shop_transaction_id: String,
    pub mall_id: String,
    pub shop_order_no: String,
    pub pg_cno: String,
    pub amount: i64,
    pub transaction_date: String,
    pub status_code: String,
    pub status_message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_auth_value: Option<String>,
    pub escrow_used: String,
    pub payment_info: PaymentInfo,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentInfo {
    pub pay_method_type_code: String,
    pub approval_no: String,
    pub approval_date: String,
}

// ---------------------------------------------------------------------------------------------
// WeChat Pay status check and cancel (spec 06, KICC-ASSUMPTIONS.md)

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindRequest {
    pub mall_id: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub pg_cno: Option<String>,
    pub cancel_pg_cno: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindPaymentResponse {
    pub res_cd: String,
    pub res_msg: String,
    pub shop_transaction_id: String,
    pub mall_id: String,
    pub shop_order_no: String,
    pub pg_cno: String,
    /// Empty until approved.
    pub approval_date: String,
    pub status_cd: String,
    /// URL-encoded, like WeChat's detail messages (spec 01).
    pub res_detail_msg: String,
    pub amount_info: PaidAmountInfo,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaidAmountInfo {
    pub currency: String,
    pub amount: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindCancelResponse {
    pub res_cd: String,
    pub res_msg: String,
    pub shop_transaction_id: String,
    pub mall_id: String,
    pub pg_cno: String,
    pub cancel_pg_cno: String,
    pub transaction_date: String,
    pub cancel_status: String,
    pub amount_info: CancelAmountInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelAmountInfo {
    pub currency: String,
    pub tot_amount: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WechatReviseRequest {
    pub mall_id: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub pg_cno: Option<String>,
    pub revise_type_code: Option<String>,
    pub cancel_req_date: Option<String>,
    pub msg_auth_value: Option<String>,
    pub notify_url: Option<String>,
    pub memo: Option<String>,
    pub reg_id: Option<String>,
    pub amount_info: Option<ReviseAmountInfo>,
}

/// Revise says `totAmount` where create says `totalAmount` (spec 06).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviseAmountInfo {
    pub currency: Option<String>,
    pub tot_amount: Option<WireAmount>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WechatReviseResponse {
    pub res_cd: String,
    pub res_msg: String,
    pub shop_transaction_id: String,
    pub mall_id: String,
    pub pg_cno: String,
    pub cancel_pg_cno: String,
    pub cancel_date: String,
}

// ---------------------------------------------------------------------------------------------
// Generic cancel and status check (spec 06)

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenericReviseRequest {
    pub mall_id: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub pg_cno: Option<String>,
    pub revise_type_code: Option<String>,
    pub cancel_req_date: Option<String>,
    pub msg_auth_value: Option<String>,
    pub amount: Option<WireAmount>,
    pub remain_amount: Option<WireAmount>,
    pub client_ip: Option<String>,
    pub revise_message: Option<String>,
}

/// The generic revise response; also the cancel shape of `retrieveTransaction`, which adds
/// `pgCno` and `cancelDate` so a cancel made through the WeChat revise reads the same.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenericReviseResponse {
    pub res_cd: String,
    pub res_msg: String,
    pub shop_transaction_id: String,
    pub mall_id: String,
    pub shop_order_no: String,
    pub ori_pg_cno: String,
    pub cancel_pg_cno: String,
    pub transaction_date: String,
    pub status_code: String,
    pub status_message: String,
    pub cancel_amount: i64,
    pub remain_amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_cno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_date: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveRequest {
    pub mall_id: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub transaction_date: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Webhooks (spec 04, 05)

/// Spec 04's body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalNotification {
    pub res_cd: String,
    pub res_msg: String,
    pub mall_id: String,
    pub shop_order_no: String,
    pub pg_cno: String,
    pub approval_date: String,
    pub amount_info: PaidAmountInfo,
}

/// Spec 05's body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelNotification {
    pub res_cd: String,
    pub res_msg: String,
    pub mall_id: String,
    pub shop_order_no: String,
    pub pg_cno: String,
    pub cancel_pg_cno: String,
    pub cancel_date: String,
    pub amount_info: PaidAmountInfo,
}

// ---------------------------------------------------------------------------------------------
// KICC Pay simple payment (spec 03, 06)

/// `reqAprv`'s body; `reqRtran` resends it byte for byte.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KiccPayApprovalRequest {
    pub tid: Option<String>,
    pub svc_id: Option<String>,
    pub bizr_no: Option<String>,
    pub merc_trx_no: Option<String>,
    pub token_key: Option<String>,
    pub alot_month: Option<String>,
    pub trx_amt: Option<WireAmount>,
    pub vat_amt: Option<WireAmount>,
    pub svc_amt: Option<WireAmount>,
    pub tax_free_amt: Option<WireAmount>,
    pub tran_dt: Option<String>,
    pub tran_tm: Option<String>,
    pub user_data: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KiccPayApprovalResponse {
    pub resp_cd: String,
    pub resp_msg: String,
    pub tid: String,
    pub svc_id: String,
    pub bizr_no: String,
    pub merc_trx_no: String,
    pub trx_dt: String,
    pub trx_tm: String,
    pub iss_fm_cd: String,
    pub iss_fm_nm: String,
    pub purch_fm_cd: String,
    pub purch_fm_nm: String,
    pub jo_shop_no: String,
    pub aprv_dt: String,
    pub aprv_tm: String,
    pub aprv_no: String,
    pub van_trx_no: String,
    pub card_confirm_no: String,
    /// Not in spec 03's table: the approved amount, echoed (KICC may add fields; spec 06). Spec
    /// 03 asks the merchant to compare "the approved amount in the response" with its own, so
    /// the sandbox says what it approved (docs/KICC-ASSUMPTIONS.md).
    pub trx_amt: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KiccPayNetCancelResponse {
    pub resp_cd: String,
    pub resp_msg: String,
    pub tid: String,
    pub merc_trx_no: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KiccPayCancelRequest {
    pub tid: Option<String>,
    pub svc_id: Option<String>,
    pub bizr_no: Option<String>,
    pub merc_trx_no: Option<String>,
    pub wcc: Option<String>,
    pub cnd_trx_no: Option<String>,
    pub alot_month: Option<String>,
    pub trx_amt: Option<WireAmount>,
    pub vat_amt: Option<WireAmount>,
    pub svc_amt: Option<WireAmount>,
    pub tran_dt: Option<String>,
    pub tran_tm: Option<String>,
    pub org_aprv_dt: Option<String>,
    pub org_aprv_no: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KiccPayCancelResponse {
    pub resp_cd: String,
    pub resp_msg: String,
    pub tid: String,
    pub merc_trx_no: String,
    pub cnd_trx_no: String,
    pub trx_amt: i64,
    pub aprv_dt: String,
    pub aprv_no: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_numbers_or_strings() {
        let read = |json: &str| serde_json::from_str::<WireAmount>(json).map(|a| a.0);
        assert_eq!(read("51004").unwrap(), 51004);
        assert_eq!(read("\"51004\"").unwrap(), 51004);
        assert_eq!(read("-5").unwrap(), -5);
        assert_eq!(read("\"-5\"").unwrap(), -5);
        for bad in [
            "12.5", "\"12.5\"", "\"\"", "\"1e3\"", "true", "null", "\"+3\"",
        ] {
            assert!(read(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn field_names_are_kiccs() {
        let keys = |v: serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let approval = serde_json::to_value(ApprovalNotification {
            res_cd: "0000".into(),
            res_msg: "Success".into(),
            mall_id: "T5102001".into(),
            shop_order_no: "O1".into(),
            pg_cno: "P1".into(),
            approval_date: "20260101000000".into(),
            amount_info: PaidAmountInfo {
                currency: "KRW".into(),
                amount: 1000,
            },
        })
        .unwrap();
        assert_eq!(
            keys(approval.clone()),
            [
                "amountInfo",
                "approvalDate",
                "mallId",
                "pgCno",
                "resCd",
                "resMsg",
                "shopOrderNo"
            ]
        );
        assert_eq!(keys(approval["amountInfo"].clone()), ["amount", "currency"]);
        let kiccpay = serde_json::to_value(KiccPayCancelResponse {
            resp_cd: "0000".into(),
            resp_msg: "ok".into(),
            tid: "T".into(),
            merc_trx_no: "M".into(),
            cnd_trx_no: "C".into(),
            trx_amt: 1,
            aprv_dt: "20260101".into(),
            aprv_no: "1".into(),
        })
        .unwrap();
        assert_eq!(
            keys(kiccpay),
            [
                "aprvDt",
                "aprvNo",
                "cndTrxNo",
                "mercTrxNo",
                "respCd",
                "respMsg",
                "tid",
                "trxAmt"
            ]
        );
    }
}
