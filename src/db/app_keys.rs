//! `app_keys`: secrets the app generates once and all instances share (cookie signing).

use diesel::prelude::*;

use super::schema::app_keys;
use super::{AnyConnection, DbError, now};

/// The key called `name`, created from `generate` if there is none yet. Two instances starting
/// at once both try to insert; the unique name lets one win and both read the winner's key.
pub fn get_or_create(
    conn: &mut AnyConnection,
    name: &str,
    generate: impl FnOnce() -> String,
) -> Result<String, DbError> {
    let existing = |conn: &mut AnyConnection| {
        app_keys::table
            .filter(app_keys::name.eq(name))
            .select(app_keys::value)
            .get_result::<String>(conn)
            .optional()
    };
    if let Some(value) = existing(conn)? {
        return Ok(value);
    }
    let inserted = diesel::insert_into(app_keys::table)
        .values((
            app_keys::name.eq(name),
            app_keys::value.eq(generate()),
            app_keys::created_at.eq(now()),
        ))
        .execute(conn)
        .map_err(DbError::from);
    match inserted {
        Ok(_) => {}
        Err(e) if e.is_unique_violation() => {}
        Err(e) => return Err(e),
    }
    existing(conn)?.ok_or(DbError::NotFound)
}
