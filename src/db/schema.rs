// @generated automatically by Diesel CLI (`diesel print-schema` against migrations/postgres),
// restricted to the column types both backends share (see db/mod.rs).

diesel::table! {
    compensations (id) {
        id -> BigInt,
        order_id -> BigInt,
        origin -> Text,
        reason -> Text,
        api -> Text,
        revise_type_code -> Nullable<Text>,
        amount -> BigInt,
        currency -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        last_shop_transaction_id -> Nullable<Text>,
        cancel_req_date -> Nullable<Text>,
        cancel_pg_cno -> Nullable<Text>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        completed_at -> Nullable<Timestamp>,
        gateway_call_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    gateway_calls (id) {
        id -> BigInt,
        order_id -> Nullable<BigInt>,
        api -> Text,
        shop_transaction_id -> Text,
        request_date -> Text,
        request_body -> Text,
        response_body -> Nullable<Text>,
        http_status -> Nullable<Integer>,
        outcome -> Nullable<Text>,
        res_cd -> Nullable<Text>,
        res_msg -> Nullable<Text>,
        pg_cno -> Nullable<Text>,
        latency_ms -> Nullable<BigInt>,
        requested_at -> Timestamp,
        completed_at -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        resolved_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    order_events (id) {
        id -> BigInt,
        order_id -> BigInt,
        event -> Text,
        from_status -> Nullable<Text>,
        to_status -> Nullable<Text>,
        cause -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    order_items (id) {
        id -> BigInt,
        order_id -> BigInt,
        sku -> Text,
        name -> Text,
        unit_price -> BigInt,
        quantity -> Integer,
        line_total -> BigInt,
    }
}

diesel::table! {
    orders (id) {
        id -> BigInt,
        shop_order_no -> Text,
        status -> Text,
        pay_method -> Text,
        currency -> Text,
        amount -> BigInt,
        cancelled_amount -> BigInt,
        goods_name -> Text,
        customer_id -> Text,
        customer_name -> Text,
        customer_mail -> Text,
        customer_contact_no -> Text,
        customer_addr -> Text,
        trade_type -> Nullable<Text>,
        pg_cno -> Nullable<Text>,
        payment_page_url -> Nullable<Text>,
        authorization_id -> Nullable<Text>,
        approval_no -> Nullable<Text>,
        approval_date -> Nullable<Text>,
        transaction_date -> Nullable<Text>,
        kicc_status_code -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        idempotency_scope -> Nullable<Text>,
        request_hash -> Nullable<Text>,
        expires_at -> Nullable<Timestamp>,
        paid_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        status_checked_at -> Nullable<Timestamp>,
        late_check_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    products (sku) {
        sku -> Text,
        name -> Text,
        description -> Text,
        price_krw -> BigInt,
        price_usd -> BigInt,
        active -> Bool,
        position -> Integer,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> BigInt,
        kind -> Text,
        route -> Text,
        source_ip -> Text,
        headers -> Text,
        body -> Text,
        received_at -> Timestamp,
        dedupe_key -> Nullable<Text>,
        pg_cno -> Nullable<Text>,
        shop_order_no -> Nullable<Text>,
        order_id -> Nullable<BigInt>,
        outcome -> Nullable<Text>,
        applied -> Bool,
        ack_res_cd -> Nullable<Text>,
        ack_body -> Nullable<Text>,
        acked_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(compensations -> orders (order_id));
diesel::joinable!(gateway_calls -> orders (order_id));
diesel::joinable!(order_events -> orders (order_id));
diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(order_items -> products (sku));
diesel::joinable!(webhook_deliveries -> orders (order_id));

diesel::allow_tables_to_appear_in_same_query!(
    admin_sessions,
    app_keys,
    compensations,
    gateway_calls,
    order_events,
    order_items,
    orders,
    products,
    webhook_deliveries,
);

diesel::table! {
    app_keys (name) {
        name -> Text,
        value -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    admin_sessions (id_hash) {
        id_hash -> Text,
        user_name -> Text,
        csrf -> Text,
        credential -> Text,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
    }
}
