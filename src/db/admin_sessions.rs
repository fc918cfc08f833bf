//! `admin_sessions`: dashboard sessions kept on the server, one row per signed-in browser, found
//! by the SHA-256 of the id its cookie carries (the id itself is never stored).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::admin_sessions;
use super::{AnyConnection, DbError};

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = admin_sessions, treat_none_as_default_value = false)]
pub struct SessionRow {
    /// Hex SHA-256 of the cookie's random id.
    pub id_hash: String,
    pub user_name: String,
    /// The CSRF token every dashboard form of this session carries.
    pub csrf: String,
    /// The fingerprint of the credentials it was opened under (`web::admin_auth`).
    pub credential: String,
    pub created_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
}

pub fn insert(conn: &mut AnyConnection, row: &SessionRow) -> Result<(), DbError> {
    diesel::insert_into(admin_sessions::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// The session whose id hashes to `id_hash`.
pub fn find(conn: &mut AnyConnection, id_hash: &str) -> Result<Option<SessionRow>, DbError> {
    Ok(admin_sessions::table
        .filter(admin_sessions::id_hash.eq(id_hash))
        .select(SessionRow::as_select())
        .get_result(conn)
        .optional()?)
}

/// Marks the session seen at `at` (callers do this at most once a minute per session).
pub fn touch(conn: &mut AnyConnection, id_hash: &str, at: NaiveDateTime) -> Result<(), DbError> {
    diesel::update(admin_sessions::table.filter(admin_sessions::id_hash.eq(id_hash)))
        .set(admin_sessions::last_seen_at.eq(at))
        .execute(conn)?;
    Ok(())
}

/// Ends one session (sign-out, or found expired). Whether there was one.
pub fn delete(conn: &mut AnyConnection, id_hash: &str) -> Result<bool, DbError> {
    let deleted = diesel::delete(admin_sessions::table.filter(admin_sessions::id_hash.eq(id_hash)))
        .execute(conn)?;
    Ok(deleted > 0)
}

/// Deletes every session that can no longer be used: idle since before `idle_before`, opened
/// before `opened_before`, or opened under other credentials than `credential`. How many.
pub fn purge(
    conn: &mut AnyConnection,
    idle_before: NaiveDateTime,
    opened_before: NaiveDateTime,
    credential: &str,
) -> Result<usize, DbError> {
    Ok(diesel::delete(
        admin_sessions::table.filter(
            admin_sessions::last_seen_at
                .lt(idle_before)
                .or(admin_sessions::created_at.lt(opened_before))
                .or(admin_sessions::credential.ne(credential)),
        ),
    )
    .execute(conn)?)
}
