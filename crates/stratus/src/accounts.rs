//! `stratus accounts`: accounts (tenants) and their access keys. It works on the data
//! directory itself, as the operator of the host, so it needs no credentials; a running server
//! picks changes up within a second.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use store::accounts::Accounts;

#[derive(Debug, Args)]
pub struct AccountsArgs {
    /// The server's data directory.
    #[arg(long, env = "STRATUS_DATA_DIR", default_value = "./.stratus", global = true)]
    data_dir: PathBuf,
    /// Work on a cluster's accounts, in its PostgreSQL database, instead of a data directory's.
    #[arg(long, env = "STRATUS_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// The default account's id (as given to `stratus serve`).
    #[arg(long, env = "STRATUS_ACCOUNT", default_value = "000000000000", global = true)]
    account: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<AccountsAction>,
}

#[derive(Debug, Subcommand)]
pub enum AccountsAction {
    /// List the accounts (the default).
    List,
    /// Create an account.
    Create {
        /// A human-readable name.
        #[arg(long, default_value = "")]
        name: String,
        /// Its 12-digit id (random if not given).
        #[arg(long)]
        id: Option<String>,
    },
    /// Manage access keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create an access key for an account; its secret is printed once and never again.
    Create { account: String },
    /// List access keys (never their secrets).
    List { account: Option<String> },
    /// Revoke an access key: requests signed with it are refused from then on.
    Revoke { access_key_id: String },
}

fn when(ms: i64) -> String {
    model::logfmt::iso_timestamp(ms)
}

pub async fn run(args: AccountsArgs) -> anyhow::Result<()> {
    let accounts = match &args.database_url {
        Some(url) => {
            let pool = store::pg::PgPool::connect(url).await.context("cannot open the cluster's database")?;
            Accounts::open_cluster(&pool, &args.account).await.context("cannot open the cluster's accounts")?
        }
        None => Accounts::open(&args.data_dir, &args.account)
            .with_context(|| format!("cannot open the accounts in {}", args.data_dir.display()))?,
    };
    // The accounts' calls block (SQLite, or the database from a blocking thread).
    tokio::task::spawn_blocking(move || act(args, accounts)).await.context("the accounts command stopped")?
}

fn act(args: AccountsArgs, accounts: Accounts) -> anyhow::Result<()> {
    match args.action.unwrap_or(AccountsAction::List) {
        AccountsAction::List => {
            let all = accounts.list_accounts()?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!("{:<14} {:<24} CREATED", "ACCOUNT", "NAME");
                for a in all {
                    println!("{:<14} {:<24} {}", a.id, a.name, when(a.created_ms));
                }
            }
        }
        AccountsAction::Create { name, id } => {
            let a = match accounts.create_account(id.as_deref(), &name) {
                Err(store::StoreError::AlreadyExists) => bail!("account {} already exists", id.unwrap_or_default()),
                other => other?,
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                println!("created account {} ({})", a.id, if a.name.is_empty() { "no name" } else { &a.name });
                println!("next: stratus accounts keys create {}", a.id);
            }
        }
        AccountsAction::Keys { action: KeysAction::Create { account } } => {
            let key = match accounts.create_key(&account) {
                Err(store::StoreError::NotFound) => bail!("no account {account}; see `stratus accounts list`"),
                other => other?,
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                println!("access key for account {}:", key.account);
                println!("  AWS_ACCESS_KEY_ID={}", key.access_key_id);
                println!("  AWS_SECRET_ACCESS_KEY={}", key.secret_access_key);
                println!("The secret is shown only now; Stratus keeps it sealed.");
            }
        }
        AccountsAction::Keys { action: KeysAction::List { account } } => {
            let keys = accounts.list_keys(account.as_deref())?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!("{:<22} {:<14} {:<26} STATUS", "ACCESS KEY ID", "ACCOUNT", "CREATED");
                for k in keys {
                    let status = match k.revoked_ms {
                        Some(ms) => format!("revoked {}", when(ms)),
                        None => "active".into(),
                    };
                    println!("{:<22} {:<14} {:<26} {status}", k.access_key_id, k.account, when(k.created_ms));
                }
            }
        }
        AccountsAction::Keys { action: KeysAction::Revoke { access_key_id } } => {
            if !accounts.revoke_key(&access_key_id)? {
                bail!("no active access key {access_key_id}");
            }
            println!("revoked {access_key_id}");
        }
    }
    Ok(())
}
