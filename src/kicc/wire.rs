//! KICC's wire types, field names exactly as KICC spells them (spec 01–06). Private to `kicc/`:
//! the rest of the app sees the domain results in `kicc::mod`.
//!
//! Requests are checked against KICC's byte limits before they are sent (`validate`); responses
//! are parsed leniently: amounts as number or string, unknown fields ignored, limits not
//! enforced on what we receive (spec 06: "Limits apply to what we send").

use serde::{Deserialize, Deserializer, Serialize};

/// A field of ours that breaks KICC's limits: our bug, caught before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub message: String,
}

fn limit(field: &'static str, value: &str, max: usize) -> Result<(), InvalidRequest> {
    if value.len() > max {
        return Err(InvalidRequest {
            field,
            message: format!("{} bytes; KICC accepts at most {max}", value.len()),
        });
    }
    if value.contains('|') {
        // `|` joins msgAuthValue inputs; KICC forbids it in request fields (spec 06).
        return Err(InvalidRequest {
            field,
            message: "must not contain |".into(),
        });
    }
    Ok(())
}

fn one_of(field: &'static str, value: &str, allowed: &[&str]) -> Result<(), InvalidRequest> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(InvalidRequest {
        field,
        message: format!("must be one of {}", allowed.join(", ")),
    })
}

fn required(field: &'static str, value: &str, max: usize) -> Result<(), InvalidRequest> {
    if value.is_empty() {
        return Err(InvalidRequest {
            field,
            message: "is required".into(),
        });
    }
    limit(field, value, max)
}

fn english(field: &'static str, value: &str, max: usize) -> Result<(), InvalidRequest> {
    required(field, value, max)?;
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(InvalidRequest {
            field,
            message: "must be English (printable ASCII), spec 01".into(),
        });
    }
    Ok(())
}

/// An amount sent as a JSON number or as a string of digits (spec 02's example sends `"51004"`).
pub fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(i64),
        Text(String),
    }
    match NumberOrString::deserialize(d)? {
        NumberOrString::Number(n) => Ok(n),
        NumberOrString::Text(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an amount"))),
    }
}

/// [`amount`] for optional fields.
pub fn optional_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapper(#[serde(deserialize_with = "amount")] i64);
    Ok(Option::<Wrapper>::deserialize(d)?.map(|Wrapper(n)| n))
}

/// What every KICC reply carries: its code, message and (where present) transaction id.
pub trait Reply {
    /// `resCd`, or `respCd` for KICC Pay.
    fn code(&self) -> &str;
    fn message(&self) -> Option<&str>;
    fn pg_cno(&self) -> Option<&str>;
    /// `resDetailMsg` where the API has one (URL-encoded).
    fn detail(&self) -> Option<&str> {
        None
    }
}

macro_rules! reply {
    ($type:ty, $code:ident, $message:ident, |$r:ident| $pg_cno:expr $(, detail: $detail:ident)?) => {
        impl Reply for $type {
            fn code(&self) -> &str {
                &self.$code
            }
            fn message(&self) -> Option<&str> {
                self.$message.as_deref()
            }
            fn pg_cno(&self) -> Option<&str> {
                let $r = self;
                $pg_cno
            }
            $(fn detail(&self) -> Option<&str> {
                self.$detail.as_deref()
            })?
        }
    };
}

reply!(CreateTransactionResponse, res_cd, res_msg, |r| r.pg_cno.as_deref(), detail: res_detail_msg);
reply!(WechatFindResponse, res_cd, res_msg, |r| r.pg_cno.as_deref(), detail: res_detail_msg);
reply!(WechatReviseResponse, res_cd, res_msg, |r| r
    .pg_cno
    .as_deref());
// The generic revise names the original payment `oriPgCno`.
reply!(ApprovalResponse, res_cd, res_msg, |r| r
    .pg_cno
    .as_deref()
    .or(r.ori_pg_cno.as_deref()));
reply!(KiccPayResponse, resp_cd, resp_msg, |_r| None);

// ---------------------------------------------------------------------------------------------
// WeChat Pay: create transaction (spec 01)

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransactionRequest {
    pub mall_id: String,
    pub shop_transaction_id: String,
    pub shop_order_no: String,
    pub goods_name: String,
    pub return_url: String,
    pub trade_type: String,
    pub notify_url: String,
    pub amount_info: CreateAmountInfo,
    pub customer_info: CustomerInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreateAmountInfo {
    pub currency: String,
    #[serde(deserialize_with = "amount")]
    pub total_amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CustomerInfo {
    pub customer_id: String,
    pub customer_name: String,
    pub customer_mail: String,
    pub customer_contact_no: String,
    pub customer_addr: String,
}

impl CreateTransactionRequest {
    /// Spec 01's limits. `tradeType` is listed as 3 bytes but its values are 6 and 4 (spec 06):
    /// the values are checked instead.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        required("mallId", &self.mall_id, 8)?;
        required("shopTransactionId", &self.shop_transaction_id, 60)?;
        required("shopOrderNo", &self.shop_order_no, 40)?;
        english("goodsName", &self.goods_name, 100)?;
        required("returnUrl", &self.return_url, 256)?;
        one_of("tradeType", self.trade_type.as_str(), &["native", "mweb"])?;
        required("notifyUrl", &self.notify_url, 256)?;
        one_of(
            "amountInfo.currency",
            self.amount_info.currency.as_str(),
            &["KRW", "USD"],
        )?;
        if self.amount_info.total_amount <= 0 {
            return Err(InvalidRequest {
                field: "amountInfo.totalAmount",
                message: "must be positive".into(),
            });
        }
        let c = &self.customer_info;
        limit("customerInfo.customerId", &c.customer_id, 20)?;
        limit("customerInfo.customerName", &c.customer_name, 20)?;
        limit("customerInfo.customerMail", &c.customer_mail, 50)?;
        limit("customerInfo.customerContactNo", &c.customer_contact_no, 11)?;
        if !c.customer_contact_no.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidRequest {
                field: "customerInfo.customerContactNo",
                message: "numbers only".into(),
            });
        }
        limit("customerInfo.customerAddr", &c.customer_addr, 200)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransactionResponse {
    pub res_cd: String,
    pub res_msg: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub mall_id: Option<String>,
    pub pg_cno: Option<String>,
    pub payment_page_url: Option<String>,
    /// URL-encoded detail from WeChat.
    pub res_detail_msg: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Approval v2 (spec 02)

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequest {
    pub mall_id: String,
    pub shop_order_no: String,
    pub shop_transaction_id: String,
    pub authorization_id: String,
    pub approval_req_date: String,
}

impl ApprovalRequest {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        required("mallId", &self.mall_id, 8)?;
        required("shopTransactionId", &self.shop_transaction_id, 60)?;
        required("authorizationId", &self.authorization_id, 60)?;
        required("shopOrderNo", &self.shop_order_no, 40)?;
        date8("approvalReqDate", &self.approval_req_date)
    }
}

fn date8(field: &'static str, value: &str) -> Result<(), InvalidRequest> {
    if value.len() != 8 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidRequest {
            field,
            message: "must be yyyyMMdd".into(),
        });
    }
    Ok(())
}

/// The approval response (spec 02); also the shape of `retrieveTransaction` (spec 06) and, with
/// the cancel fields, of the generic revise response.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalResponse {
    pub res_cd: String,
    pub res_msg: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub mall_id: Option<String>,
    pub shop_order_no: Option<String>,
    pub pg_cno: Option<String>,
    #[serde(default, deserialize_with = "optional_amount")]
    pub amount: Option<i64>,
    pub transaction_date: Option<String>,
    pub status_code: Option<String>,
    pub status_message: Option<String>,
    pub msg_auth_value: Option<String>,
    pub escrow_used: Option<String>,
    pub payment_info: Option<PaymentInfo>,
    pub basket_info_list: Option<Vec<serde_json::Value>>,
    // Cancel-shaped answers of retrieveTransaction / revise (spec 06).
    pub ori_pg_cno: Option<String>,
    pub cancel_pg_cno: Option<String>,
    #[serde(default, deserialize_with = "optional_amount")]
    pub cancel_amount: Option<i64>,
    #[serde(default, deserialize_with = "optional_amount")]
    pub remain_amount: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentInfo {
    pub pay_method_type_code: Option<String>,
    pub approval_no: Option<String>,
    pub approval_date: Option<String>,
    pub cp_code: Option<String>,
    pub card_info: Option<serde_json::Value>,
    pub bank_info: Option<serde_json::Value>,
    pub virtual_account_info: Option<serde_json::Value>,
    pub mob_info: Option<serde_json::Value>,
    pub cash_receipt_info: Option<serde_json::Value>,
}

// ---------------------------------------------------------------------------------------------
// WeChat Pay find (payment and cancellation status) and revise (spec 06)

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WechatFindRequest {
    pub mall_id: String,
    pub shop_transaction_id: String,
    pub pg_cno: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_pg_cno: Option<String>,
}

impl WechatFindRequest {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        required("mallId", &self.mall_id, 8)?;
        required("shopTransactionId", &self.shop_transaction_id, 60)?;
        required("pgCno", &self.pg_cno, 60)?;
        if let Some(c) = &self.cancel_pg_cno {
            required("cancelPgCno", c, 60)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WechatFindResponse {
    pub res_cd: String,
    pub res_msg: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub mall_id: Option<String>,
    pub shop_order_no: Option<String>,
    pub pg_cno: Option<String>,
    pub approval_date: Option<String>,
    pub status_cd: Option<String>,
    pub res_detail_msg: Option<String>,
    pub cancel_pg_cno: Option<String>,
    pub transaction_date: Option<String>,
    pub cancel_status: Option<String>,
    pub amount_info: Option<ReceivedAmountInfo>,
}

/// `amountInfo` as received: `amount` (payment) or `totAmount` (cancellation).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedAmountInfo {
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "optional_amount")]
    pub amount: Option<i64>,
    #[serde(default, deserialize_with = "optional_amount")]
    pub tot_amount: Option<i64>,
}

impl ReceivedAmountInfo {
    pub fn value(&self) -> Option<i64> {
        self.amount.or(self.tot_amount)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WechatReviseRequest {
    pub mall_id: String,
    pub shop_transaction_id: String,
    pub pg_cno: String,
    /// `"40"` full, `"32"` partial.
    pub revise_type_code: String,
    /// yyyyMMdd; on a retry, the original date (spec 06).
    pub cancel_req_date: String,
    pub msg_auth_value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_info: Option<ReviseAmountInfo>,
}

/// Revise uses `totAmount` where create uses `totalAmount` (spec 06).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReviseAmountInfo {
    pub currency: String,
    #[serde(deserialize_with = "amount")]
    pub tot_amount: i64,
}

impl WechatReviseRequest {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        required("mallId", &self.mall_id, 8)?;
        required("shopTransactionId", &self.shop_transaction_id, 60)?;
        required("pgCno", &self.pg_cno, 60)?;
        one_of(
            "reviseTypeCode",
            self.revise_type_code.as_str(),
            &["40", "32"],
        )?;
        date8("cancelReqDate", &self.cancel_req_date)?;
        required("msgAuthValue", &self.msg_auth_value, 200)?;
        if let Some(url) = &self.notify_url {
            limit("notifyUrl", url, 1000)?;
        }
        if let Some(memo) = &self.memo {
            limit("memo", memo, 400)?;
        }
        match (&self.revise_type_code[..], &self.amount_info) {
            ("32", None) => Err(InvalidRequest {
                field: "amountInfo.totAmount",
                message: "is required for a partial cancel".into(),
            }),
            (_, Some(a)) if a.tot_amount <= 0 => Err(InvalidRequest {
                field: "amountInfo.totAmount",
                message: "must be positive".into(),
            }),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WechatReviseResponse {
    pub res_cd: String,
    pub res_msg: Option<String>,
    pub shop_transaction_id: Option<String>,
    pub mall_id: Option<String>,
    pub pg_cno: Option<String>,
    pub cancel_pg_cno: Option<String>,
    pub cancel_date: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Generic online APIs: revise (cancel) and retrieveTransaction (spec 06)

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReviseRequest {
    pub mall_id: String,
    pub shop_transaction_id: String,
    pub pg_cno: String,
    pub revise_type_code: String,
    pub cancel_req_date: String,
    pub msg_auth_value: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_amount"
    )]
    pub amount: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_amount"
    )]
    pub remain_amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revise_message: Option<String>,
}

impl ReviseRequest {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        required("mallId", &self.mall_id, 8)?;
        required("shopTransactionId", &self.shop_transaction_id, 60)?;
        required("pgCno", &self.pg_cno, 20)?;
        one_of(
            "reviseTypeCode",
            self.revise_type_code.as_str(),
            &["40", "32", "33"],
        )?;
        date8("cancelReqDate", &self.cancel_req_date)?;
        required("msgAuthValue", &self.msg_auth_value, 200)?;
        if let Some(m) = &self.revise_message {
            limit("reviseMessage", m, 100)?;
        }
        if self.revise_type_code != "40" && self.amount.is_none() {
            return Err(InvalidRequest {
                field: "amount",
                message: "is required for a partial cancel".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveTransactionRequest {
    pub mall_id: String,
    /// The key of the original approval or cancel request.
    pub shop_transaction_id: String,
    /// yyyyMMdd of the original request.
    pub transaction_date: String,
}

impl RetrieveTransactionRequest {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        required("mallId", &self.mall_id, 8)?;
        required("shopTransactionId", &self.shop_transaction_id, 60)?;
        date8("transactionDate", &self.transaction_date)
    }
}

// ---------------------------------------------------------------------------------------------
// KICC Pay (spec 03, 06)

/// `reqAprv` — and `reqRtran`, which resends the approval's data unchanged (spec 06).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KiccPayApprovalRequest {
    pub tid: String,
    pub svc_id: String,
    pub bizr_no: String,
    pub merc_trx_no: String,
    pub token_key: String,
    pub alot_month: String,
    #[serde(deserialize_with = "amount")]
    pub trx_amt: i64,
    #[serde(deserialize_with = "amount")]
    pub vat_amt: i64,
    #[serde(
        default,
        deserialize_with = "optional_amount",
        skip_serializing_if = "Option::is_none"
    )]
    pub svc_amt: Option<i64>,
    #[serde(
        default,
        deserialize_with = "optional_amount",
        skip_serializing_if = "Option::is_none"
    )]
    pub tax_free_amt: Option<i64>,
    pub tran_dt: String,
    pub tran_tm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

impl KiccPayApprovalRequest {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        required("tid", &self.tid, 10)?;
        required("svcId", &self.svc_id, 10)?;
        required("bizrNo", &self.bizr_no, 10)?;
        // 40 bytes allowed, 20 recommended and echoed in 20 (spec 06): we send at most 20.
        required("mercTrxNo", &self.merc_trx_no, 20)?;
        required("tokenKey", &self.token_key, 128)?;
        required("alotMonth", &self.alot_month, 2)?;
        date8("tranDt", &self.tran_dt)?;
        if self.tran_tm.len() != 6 || !self.tran_tm.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidRequest {
                field: "tranTm",
                message: "must be HHmmss".into(),
            });
        }
        if let Some(u) = &self.user_data {
            limit("userData", u, 512)?;
        }
        if self.trx_amt <= 0 || self.vat_amt < 0 {
            return Err(InvalidRequest {
                field: "trxAmt",
                message: "must be positive".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KiccPayResponse {
    pub resp_cd: String,
    pub resp_msg: Option<String>,
    pub tid: Option<String>,
    pub svc_id: Option<String>,
    pub bizr_no: Option<String>,
    pub merc_trx_no: Option<String>,
    pub trx_dt: Option<String>,
    pub trx_tm: Option<String>,
    pub iss_fm_cd: Option<String>,
    pub iss_fm_nm: Option<String>,
    pub purch_fm_cd: Option<String>,
    pub purch_fm_nm: Option<String>,
    pub jo_shop_no: Option<String>,
    pub aprv_dt: Option<String>,
    pub aprv_tm: Option<String>,
    pub aprv_no: Option<String>,
    pub van_trx_no: Option<String>,
    pub card_confirm_no: Option<String>,
    /// Not in spec 03's table; read when present so an approved amount can be compared.
    #[serde(default, deserialize_with = "optional_amount")]
    pub trx_amt: Option<i64>,
    pub cnd_trx_no: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KiccPayCancelRequest {
    pub tid: String,
    pub svc_id: String,
    pub bizr_no: String,
    /// A new merchant transaction number for the cancel.
    pub merc_trx_no: String,
    /// `G`: by merchant transaction number, `T`: by VAN transaction number.
    pub wcc: String,
    pub cnd_trx_no: String,
    pub alot_month: String,
    #[serde(deserialize_with = "amount")]
    pub trx_amt: i64,
    #[serde(deserialize_with = "amount")]
    pub vat_amt: i64,
    #[serde(
        default,
        deserialize_with = "optional_amount",
        skip_serializing_if = "Option::is_none"
    )]
    pub svc_amt: Option<i64>,
    pub tran_dt: String,
    pub tran_tm: String,
    pub org_aprv_dt: String,
    pub org_aprv_no: String,
}

impl KiccPayCancelRequest {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        required("tid", &self.tid, 10)?;
        required("svcId", &self.svc_id, 10)?;
        required("bizrNo", &self.bizr_no, 10)?;
        required("mercTrxNo", &self.merc_trx_no, 20)?;
        one_of("wcc", self.wcc.as_str(), &["G", "T"])?;
        required("cndTrxNo", &self.cnd_trx_no, 40)?;
        date8("tranDt", &self.tran_dt)?;
        date8("orgAprvDt", &self.org_aprv_dt)?;
        required("orgAprvNo", &self.org_aprv_no, 10)?;
        if self.trx_amt <= 0 {
            return Err(InvalidRequest {
                field: "trxAmt",
                message: "must be positive".into(),
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks (spec 04, 05)

/// Both notifications in one shape: the cancellation one adds `cancelPgCno` and `cancelDate`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationBody {
    pub res_cd: String,
    pub res_msg: Option<String>,
    pub mall_id: Option<String>,
    pub shop_order_no: Option<String>,
    pub pg_cno: Option<String>,
    pub approval_date: Option<String>,
    pub cancel_pg_cno: Option<String>,
    pub cancel_date: Option<String>,
    pub amount_info: Option<ReceivedAmountInfo>,
}

/// The ack both webhooks expect (spec 04, 05).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAck {
    pub res_cd: String,
    pub res_msg: String,
    pub pg_cno: String,
}

#[cfg(test)]
mod tests {
    //! The example bodies printed in KICC's spec files parse into these types
    //! (`tests/fixtures/spec`, from KICC's pages in `docs/kicc-spec`).
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/spec/", $name))
        };
    }

    #[test]
    fn spec_01_create_examples_parse() {
        let request: CreateTransactionRequest =
            serde_json::from_str(fixture!("01-create-request.json")).unwrap();
        assert_eq!(request.trade_type, "native");
        assert_eq!(request.amount_info.total_amount, 1000);
        assert_eq!(request.customer_info.customer_contact_no, "01012345678");
        let response: CreateTransactionResponse =
            serde_json::from_str(fixture!("01-create-response.json")).unwrap();
        assert_eq!(response.res_cd, "0000");
        assert_eq!(
            response.payment_page_url.as_deref(),
            Some("weixin://wxpay/bizpayurl?pr=...")
        );
        // What we send serializes with KICC's exact field names.
        let sent = serde_json::to_value(&request).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(fixture!("01-create-request.json")).unwrap();
        assert_eq!(sent, expected);
    }

    #[test]
    fn spec_02_approval_examples_parse() {
        let request: ApprovalRequest =
            serde_json::from_str(fixture!("02-approval-request.json")).unwrap();
        assert_eq!(request.mall_id, "T5102001");
        let expected: serde_json::Value =
            serde_json::from_str(fixture!("02-approval-request.json")).unwrap();
        assert_eq!(serde_json::to_value(&request).unwrap(), expected);
        let response: ApprovalResponse =
            serde_json::from_str(fixture!("02-approval-response.json")).unwrap();
        // `"amount": "51004"`: a string in the example, a Number in the table.
        assert_eq!(response.amount, Some(51004));
        assert_eq!(response.transaction_date.as_deref(), Some("20210326090200"));
        assert_eq!(response.status_code.as_deref(), Some("TS03"));
        let info = response.payment_info.unwrap();
        assert_eq!(info.approval_no.as_deref(), Some("00017177"));
        assert_eq!(info.card_info.unwrap()["installmentMonth"], 0);
    }

    #[test]
    fn spec_03_kiccpay_examples_parse() {
        let request: KiccPayApprovalRequest =
            serde_json::from_str(fixture!("03-reqaprv-request.json")).unwrap();
        assert_eq!((request.trx_amt, request.vat_amt), (10000, 909));
        assert_eq!(request.svc_amt, Some(0));
        let expected: serde_json::Value =
            serde_json::from_str(fixture!("03-reqaprv-request.json")).unwrap();
        assert_eq!(serde_json::to_value(&request).unwrap(), expected);
        let response: KiccPayResponse =
            serde_json::from_str(fixture!("03-reqaprv-response.json")).unwrap();
        assert_eq!(response.resp_cd, "0000");
        assert_eq!(response.aprv_no.as_deref(), Some("12345678"));
        assert_eq!(
            response.card_confirm_no.as_deref(),
            Some("1234-56**-****-1234")
        );
    }

    #[test]
    fn spec_04_05_acks_and_notifications_parse() {
        for (text, code) in [
            (fixture!("04-ack-success.json"), "0000"),
            (fixture!("04-ack-failure.json"), "5001"),
            (fixture!("05-ack-success.json"), "0000"),
            (fixture!("05-ack-failure.json"), "5001"),
        ] {
            let ack: WebhookAck = serde_json::from_str(text).unwrap();
            assert_eq!(ack.res_cd, code);
            assert_eq!(ack.pg_cno, "{KICC Payment Transaction ID}");
        }
        let payment: NotificationBody =
            serde_json::from_str(fixture!("04-notification-from-table.json")).unwrap();
        assert_eq!(payment.amount_info.unwrap().value(), Some(12000));
        let cancel: NotificationBody =
            serde_json::from_str(fixture!("05-notification-from-table.json")).unwrap();
        assert_eq!(
            cancel.cancel_pg_cno.as_deref(),
            Some("26112116000000000002")
        );
        assert_eq!(cancel.amount_info.unwrap().value(), Some(3000));
    }

    #[test]
    fn unknown_fields_are_ignored_and_amount_text_must_be_a_number() {
        let response: ApprovalResponse =
            serde_json::from_str(r#"{"resCd":"0000","amount":" 700 ","brandNewField":{"x":1}}"#)
                .unwrap();
        assert_eq!(response.amount, Some(700));
        assert!(
            serde_json::from_str::<ApprovalResponse>(r#"{"resCd":"0000","amount":"7OO"}"#).is_err()
        );
        assert!(serde_json::from_str::<ApprovalResponse>(r#"{"resMsg":"no code"}"#).is_err());
    }

    /// Spec 01's example with a real merchant id in place of its `{Merchant ID}` placeholder.
    fn create_request() -> CreateTransactionRequest {
        let mut request: CreateTransactionRequest =
            serde_json::from_str(fixture!("01-create-request.json")).unwrap();
        assert_eq!(
            request.validate().unwrap_err().field,
            "mallId",
            "the placeholder is 13 bytes"
        );
        request.mall_id = "T5102001".into();
        request
    }

    #[test]
    fn our_requests_are_checked_against_kicc_limits_before_sending() {
        let mut too_long = create_request();
        too_long.goods_name = "x".repeat(101);
        assert_eq!(too_long.validate().unwrap_err().field, "goodsName");
        let mut korean = create_request();
        korean.goods_name = "티셔츠".into();
        assert_eq!(korean.validate().unwrap_err().field, "goodsName");
        let mut order_no = create_request();
        order_no.shop_order_no = "o".repeat(41);
        assert_eq!(order_no.validate().unwrap_err().field, "shopOrderNo");
        let mut phone = create_request();
        phone.customer_info.customer_contact_no = "010-1234".into();
        assert_eq!(
            phone.validate().unwrap_err().field,
            "customerInfo.customerContactNo"
        );
        let mut pipe = create_request();
        pipe.customer_info.customer_name = "a|b".into();
        assert_eq!(
            pipe.validate().unwrap_err().field,
            "customerInfo.customerName"
        );
        let mut trade = create_request();
        trade.trade_type = "app".into();
        assert_eq!(trade.validate().unwrap_err().field, "tradeType");
        assert!(create_request().validate().is_ok());

        let revise = WechatReviseRequest {
            mall_id: "T5102001".into(),
            shop_transaction_id: "k".into(),
            pg_cno: "p".into(),
            revise_type_code: "32".into(),
            cancel_req_date: "20261121".into(),
            msg_auth_value: "m".into(),
            notify_url: None,
            memo: None,
            amount_info: None,
        };
        assert_eq!(revise.validate().unwrap_err().field, "amountInfo.totAmount");
    }
}
