//! `kicc-ceiling`: this machine's ceilings for the load harness (issue 9, `benches/load.sh`),
//! built from the same dependency versions as the app: an actix-web hello-world handler, and a
//! handler doing one diesel insert per request through the app's own pool and write transaction
//! (`kicc_checkout::db`), on SQLite or PostgreSQL. Not part of the product.
//!
//! ```text
//! kicc-ceiling --bind 127.0.0.1:18090 --database-url sqlite:///tmp/ceiling.db
//! GET /hello   → "Hello, world!"
//! POST /insert → one row (the request body as text) in `ceiling_rows`, then 200 "{}"
//! ```

use std::net::SocketAddr;

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use diesel::prelude::*;
use kicc_checkout::db::{Backend, DatabaseUrl, Db, DbError, PoolOptions, write_transaction};

diesel::table! {
    ceiling_rows (id) {
        id -> BigInt,
        body -> Text,
    }
}

#[derive(Parser)]
#[command(
    name = "kicc-ceiling",
    about = "Hello-world and one-insert ceilings for the load harness"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:18090")]
    bind: SocketAddr,
    #[arg(long)]
    database_url: String,
}

async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("Hello, world!")
}

async fn insert(db: web::Data<Db>, body: String) -> HttpResponse {
    let stored = db
        .run(move |conn| {
            write_transaction(conn, |conn| {
                diesel::insert_into(ceiling_rows::table)
                    .values(ceiling_rows::body.eq(body))
                    .execute(conn)
                    .map_err(DbError::from)
            })
        })
        .await;
    match stored {
        Ok(_) => HttpResponse::Ok()
            .content_type("application/json")
            .body("{}"),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let url = DatabaseUrl::parse(&cli.database_url).map_err(std::io::Error::other)?;
    // The app's own pool settings.
    let db = Db::connect(&url, &PoolOptions::default()).map_err(std::io::Error::other)?;
    let ddl = match db.backend() {
        Backend::Sqlite => {
            "CREATE TABLE IF NOT EXISTS ceiling_rows (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"
        }
        Backend::Postgres => {
            "CREATE TABLE IF NOT EXISTS ceiling_rows (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)"
        }
    };
    let mut conn = db.get().map_err(std::io::Error::other)?;
    diesel::sql_query(ddl)
        .execute(&mut *conn)
        .map_err(std::io::Error::other)?;
    drop(conn);
    actix_web::rt::System::new().block_on(async move {
        let db = web::Data::new(db);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(db.clone())
                .app_data(web::PayloadConfig::new(64 * 1024))
                .route("/hello", web::get().to(hello))
                .route("/insert", web::post().to(insert))
        })
        .bind(cli.bind)?;
        println!("kicc-ceiling listening on http://{}", server.addrs()[0]);
        server.run().await
    })
}
