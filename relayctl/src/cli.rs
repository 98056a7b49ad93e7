//! The command line, declared with clap derive. Every interactive prompt has a flag here, so
//! every command can run from scripts; global flags (`--server`, `--token`, `--output`) work
//! before or after the subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  relayctl add-model                                   # asks for each value on a terminal
  relayctl add-model --name qwen3-32b --endpoint http://gpu-box-1:8000/v1 \\
      --deployment qwen3-32b --models claude-3-5-sonnet-20241022,gpt-4o --priority 10
  relayctl import --batch custom-models.json --dry-run
  relayctl models
  relayctl accounts disable qwen3-32b
  relayctl accounts probe --all
  relayctl keys create --name alice --allowed-models 'claude-*' --rpm 60
  relayctl usage --since 7d --by model
  relayctl top
  relayctl test-endpoint qwen3-32b
  relayctl --output json status

The admin token comes from --token, else RELAYCTL_TOKEN, else the file relayd wrote:
<RELAYD_DATA_DIR or ./relayd-data>/admin.token.
Exit codes: 0 ok, 1 failure, 2 usage error.";

/// relayctl: manage a relayd instance through its admin API.
#[derive(Debug, Parser)]
#[command(name = "relayctl", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Base URL of relayd.
    #[arg(
        long,
        env = "RELAYCTL_SERVER",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub server: String,
    /// Admin token (default: the admin.token file in relayd's data directory).
    #[arg(long, env = "RELAYCTL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    pub output: OutputFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables for people.
    Text,
    /// Pretty-printed JSON for scripts.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add one upstream account (asks for missing values on a terminal).
    #[command(after_help = "Example:
  relayctl add-model --name glm --endpoint http://gpu-box-2:8000/v1 --deployment glm-4.6 \\
      --api-key sk-... --models claude-3-opus-20240229,gpt-4-turbo")]
    AddModel(AddModelArgs),
    /// Create or update accounts from a batch file (a JSON array), upserting by name.
    #[command(after_help = "Example:
  relayctl import --batch custom-models.json --dry-run")]
    Import(ImportArgs),
    /// Print the environment that points Claude Code at relayd for one model, with the context
    /// window it must plan for.
    #[command(after_help = "Example:
  eval \"$(relayctl env --model claude-sonnet-4-5-20250929 --key rk-...)\" && claude")]
    Env(EnvArgs),
    /// Show the routing table: model name -> accounts in routing order.
    #[command(after_help = "Examples:
  relayctl models
  relayctl models --check claude-sonnet-4-5-20250929")]
    Models(ModelsArgs),
    /// List, show, update, enable, disable, reset or remove accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Create, list, update or revoke relay API keys (what clients present).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show request and token totals by key, account, model, hour or day.
    #[command(after_help = "Examples:
  relayctl usage                                # by key, everything recorded
  relayctl usage --since 24h --by model
  relayctl usage --since 2025-01-01 --until 2025-02-01 --by day --key alice
  relayctl --output json usage --since 7d --by account

Times are Unix milliseconds, RFC 3339 (2025-01-31T12:00:00Z, or a date for its UTC midnight),
or an age before now (30m, 24h, 7d, 2w). Totals have one-hour resolution.")]
    Usage(UsageArgs),
    /// Show daemon version, uptime, store, accounts and keys.
    Status,
    /// A live full-screen view of accounts and keys, refreshed every second: state, requests in
    /// flight, requests/s, errors/s, time to first byte, tokens/s, tokens today.
    #[command(after_help = "Examples:
  relayctl top
  relayctl top --interval 5 --sort errors --filter qwen
  relayctl top --once                     # one snapshot as tables, no terminal needed
  relayctl --output json top --once       # one snapshot as JSON, for scripts

Keys: q, Esc or Ctrl-C quit; s sorts by the next column; / filters by name (Enter keeps it,
Esc clears it); arrows, PgUp/PgDn and Home scroll the accounts.")]
    Top(TopArgs),
    /// Check an upstream the way relay traffic uses it: reachable, model listed, chat, streaming,
    /// tool calls, latency. Exits 1 when a check fails.
    #[command(after_help = "Examples:
  relayctl test-endpoint qwen3-32b
  relayctl test-endpoint --endpoint http://gpu-box-1:8000/v1 --deployment qwen3-32b --api-key sk-...
  relayctl --output json test-endpoint qwen3-32b    # for monitoring scripts")]
    TestEndpoint(TestEndpointArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example:
  relayctl completions bash > /etc/bash_completion.d/relayctl")]
    Completions(CompletionsArgs),
}

/// Account settings as flags; all optional here, `add-model` asks for or demands the required ones.
#[derive(Debug, Clone, Default, Args)]
pub struct AccountFlags {
    /// Account name (unique).
    #[arg(long)]
    pub name: Option<String>,
    /// Upstream base URL, e.g. http://gpu-box-1:8000/v1.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model name sent upstream.
    #[arg(long)]
    pub deployment: Option<String>,
    /// Upstream API key (an empty value clears it on update).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Client-facing model names served, comma-separated (default: the 14 standard names).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// 1-100, lower is tried first (default 50).
    #[arg(long)]
    pub priority: Option<i64>,
    /// Max requests in flight on this account (default 50).
    #[arg(long)]
    pub concurrency: Option<i64>,
    /// Outbound proxy URL (http, https, socks5).
    #[arg(long)]
    pub proxy: Option<String>,
    /// URL shape (default: azure for *.openai.azure.com, else openai).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Azure api-version.
    #[arg(long)]
    pub api_version: Option<String>,
    /// The upstream's context window in tokens (default: what a probe detects).
    #[arg(long)]
    pub context_window: Option<i64>,
    /// How Anthropic clients reach the account: auto (native when the probe saw the server's
    /// Messages API handle streamed tool calls), native, or translate.
    #[arg(long, value_enum)]
    pub anthropic_mode: Option<AnthropicModeArg>,
    /// The header the upstream takes the API key in (default: by kind).
    #[arg(long, value_enum)]
    pub upstream_auth: Option<UpstreamAuthArg>,
}

/// `--anthropic-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnthropicModeArg {
    /// Decided by the probe.
    Auto,
    /// The server's own `/v1/messages`.
    Native,
    /// Translated to chat completions.
    Translate,
}

impl From<AnthropicModeArg> for shared::account::AnthropicMode {
    fn from(mode: AnthropicModeArg) -> Self {
        match mode {
            AnthropicModeArg::Auto => Self::Auto,
            AnthropicModeArg::Native => Self::Native,
            AnthropicModeArg::Translate => Self::Translate,
        }
    }
}

/// `--upstream-auth` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpstreamAuthArg {
    /// `Authorization: Bearer`.
    Bearer,
    /// `x-api-key`.
    XApiKey,
    /// `api-key` (Azure).
    ApiKey,
}

impl From<UpstreamAuthArg> for shared::account::UpstreamAuth {
    fn from(auth: UpstreamAuthArg) -> Self {
        match auth {
            UpstreamAuthArg::Bearer => Self::Bearer,
            UpstreamAuthArg::XApiKey => Self::XApiKey,
            UpstreamAuthArg::ApiKey => Self::ApiKey,
        }
    }
}

/// `--kind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Any OpenAI-compatible server.
    Openai,
    /// Azure OpenAI.
    Azure,
    /// A server that speaks only the Anthropic Messages API.
    Anthropic,
}

impl From<KindArg> for shared::account::AccountKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Openai => Self::Openai,
            KindArg::Azure => Self::Azure,
            KindArg::Anthropic => Self::Anthropic,
        }
    }
}

/// `add-model`.
#[derive(Debug, Args)]
pub struct AddModelArgs {
    /// The account's settings.
    #[command(flatten)]
    pub account: AccountFlags,
    /// Save without the final confirmation on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Test the endpoint before saving (on a terminal you are asked); a failed check saves nothing
    /// unless you confirm on a terminal.
    #[arg(long)]
    pub test: bool,
}

/// `test-endpoint`: a saved account, or unsaved settings.
#[derive(Debug, Args)]
pub struct TestEndpointArgs {
    /// Saved account id or name.
    #[arg(
        required_unless_present = "endpoint",
        conflicts_with_all = ["endpoint", "deployment", "api_key", "kind", "api_version", "proxy"]
    )]
    pub account: Option<String>,
    /// Upstream base URL of unsaved settings, e.g. http://gpu-box-1:8000/v1.
    #[arg(long, requires = "deployment")]
    pub endpoint: Option<String>,
    /// Model name sent upstream (with --endpoint).
    #[arg(long, requires = "endpoint")]
    pub deployment: Option<String>,
    /// Upstream API key (with --endpoint).
    #[arg(long)]
    pub api_key: Option<String>,
    /// URL shape (default: azure for *.openai.azure.com, else openai).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Azure api-version (with --endpoint).
    #[arg(long)]
    pub api_version: Option<String>,
    /// Outbound proxy URL (with --endpoint).
    #[arg(long)]
    pub proxy: Option<String>,
    /// Seconds each chat check may take (default 60).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The batch file: a JSON array of accounts.
    #[arg(long, value_name = "FILE")]
    pub batch: PathBuf,
    /// Validate and report what would change, writing nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Show only the accounts a request for this model name would go to, in order.
    #[arg(long, value_name = "MODEL")]
    pub check: Option<String>,
}

/// `env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The model name Claude Code should ask for (keep a Claude name: Claude Code shapes its
    /// requests by it).
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// The relay key's secret (default: a placeholder to replace).
    #[arg(long, env = "RELAY_KEY", hide_env_values = true, value_name = "SECRET")]
    pub key: Option<String>,
}

/// `accounts …`.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only complicate the clap derive"
)]
pub enum AccountsCommand {
    /// List all accounts.
    List,
    /// Show one account.
    Show {
        /// Account id or name.
        account: String,
    },
    /// Change some settings of an account.
    #[command(after_help = "Examples:
  relayctl accounts update qwen3-32b --priority 5 --models gpt-4o,claude-3-5-sonnet-20241022
  relayctl accounts update qwen3-32b --clear-api-key
  relayctl accounts update qwen3-32b --context-window 32768 --anthropic-mode translate")]
    Update(UpdateAccountArgs),
    /// Put an account back into routing.
    Enable {
        /// Account id or name.
        account: String,
    },
    /// Take an account out of routing (kept, not deleted).
    Disable {
        /// Account id or name.
        account: String,
    },
    /// End an account's cooldown now, so it takes traffic again at once (`enable` does too).
    #[command(after_help = "Example:
  relayctl accounts reset qwen3-32b   # after fixing what made it fail, or a too-long retry-after")]
    Reset {
        /// Account id or name.
        account: String,
    },
    /// Probe accounts' upstreams now for their capability profile (server family, context
    /// window, tokenizer, native Messages API, tool calls).
    #[command(after_help = "Examples:
  relayctl accounts probe qwen3-32b
  relayctl accounts probe --all")]
    Probe {
        /// Account id or name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        account: Option<String>,
        /// Every account, one after another.
        #[arg(long)]
        all: bool,
    },
    /// Delete an account.
    Remove {
        /// Account id or name.
        account: String,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `accounts update`.
#[derive(Debug, Args)]
pub struct UpdateAccountArgs {
    /// Account id or name.
    pub account: String,
    /// New values; `--name` renames.
    #[command(flatten)]
    pub account_flags: AccountFlags,
    /// Remove the stored upstream API key.
    #[arg(long, conflicts_with = "api_key")]
    pub clear_api_key: bool,
    /// Remove the outbound proxy.
    #[arg(long, conflicts_with = "proxy")]
    pub clear_proxy: bool,
    /// Forget the set context window: the probe's (or none) is used again.
    #[arg(long, conflicts_with = "context_window")]
    pub clear_context_window: bool,
}

/// `keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    #[command(after_help = "Example:
  relayctl keys create --name alice --allowed-models claude-sonnet-4-5-20250929 --rpm 60")]
    Create(CreateKeyArgs),
    /// List keys (never their secrets).
    List,
    /// Revoke a key for good.
    Revoke {
        /// Key id.
        key: String,
    },
    /// Change a key's name, state, scope or limits.
    Update(UpdateKeyArgs),
}

/// Scope and limits of a key, shared by create and update.
#[derive(Debug, Clone, Default, Args)]
pub struct KeyScopeFlags {
    /// Model names or `*` patterns the key may use, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub allowed_models: Option<Vec<String>>,
    /// Account names the key may use, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub bound_accounts: Option<Vec<String>>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Input + output tokens per UTC day.
    #[arg(long)]
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Expire the key this many days from now.
    #[arg(long)]
    pub expires_in_days: Option<u32>,
}

/// `keys create`.
#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// Label, shown in logs and usage.
    #[arg(long)]
    pub name: String,
    /// Scope and limits.
    #[command(flatten)]
    pub scope: KeyScopeFlags,
}

/// `keys update`.
#[derive(Debug, Args)]
pub struct UpdateKeyArgs {
    /// Key id.
    pub key: String,
    /// New label.
    #[arg(long)]
    pub name: Option<String>,
    /// Enable the key.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Disable the key (kept, refused with 401).
    #[arg(long)]
    pub disable: bool,
    /// Remove the expiry.
    #[arg(long, conflicts_with = "expires_in_days")]
    pub no_expiry: bool,
    /// Scope and limits; a limit flag keeps the other limits as they are.
    #[command(flatten)]
    pub scope: KeyScopeFlags,
}

/// `usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// From this time on (default: everything recorded).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<String>,
    /// Before this time (default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<String>,
    /// What each row is.
    #[arg(long, value_enum, default_value_t = GroupByArg::Key)]
    pub by: GroupByArg,
    /// Only this relay key (by name).
    #[arg(long)]
    pub key: Option<String>,
    /// Only this account (by name).
    #[arg(long)]
    pub account: Option<String>,
    /// Only this model label: a configured model name or pattern, or `other`.
    #[arg(long)]
    pub model: Option<String>,
}

/// `--by` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupByArg {
    /// Relay key name.
    Key,
    /// Account name.
    Account,
    /// Model label: the configured name or pattern that routed the request, or `other`.
    Model,
    /// UTC hour.
    Hour,
    /// UTC day.
    Day,
}

impl From<GroupByArg> for shared::usage::UsageGroupBy {
    fn from(arg: GroupByArg) -> Self {
        match arg {
            GroupByArg::Key => Self::Key,
            GroupByArg::Account => Self::Account,
            GroupByArg::Model => Self::Model,
            GroupByArg::Hour => Self::Hour,
            GroupByArg::Day => Self::Day,
        }
    }
}

/// Checks a time argument locally (so a typo is a usage error) but passes it on as typed: relayd
/// resolves ages against its own clock.
fn parse_time(value: &str) -> Result<String, String> {
    shared::time::parse_time_spec(value, shared::time::now_millis())
        .map(|_| value.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// `top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Seconds between refreshes (0.2 to 3600; fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// Print one snapshot (cumulative counters, no rates) and exit; works without a terminal.
    #[arg(long)]
    pub once: bool,
    /// Column the accounts are sorted by at start (`s` changes it).
    #[arg(long, value_enum, default_value_t = TopSort::Name)]
    pub sort: TopSort,
    /// Show only accounts and keys whose name contains this (case-insensitive; `/` changes it).
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

/// Columns `top` sorts accounts by, in the order `s` cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopSort {
    /// Account name, A to Z.
    Name,
    /// Problems first: cooling down, full, disabled, then ok.
    State,
    /// Requests in flight, most first.
    InFlight,
    /// Requests per second, most first.
    Requests,
    /// Errors per second, most first.
    Errors,
    /// Median time to first byte, slowest first.
    Ttfb,
    /// Tokens per second, most first.
    Tokens,
}

/// A refresh interval in seconds, fractions allowed, within sane bounds: faster than 0.2 s
/// would poll relayd for nothing a person can read.
fn parse_interval(value: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if !(0.2..=3600.0).contains(&secs) {
        return Err(format!("{value} is outside 0.2 to 3600 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate for.
    #[arg(value_enum)]
    pub shell: ShellArg,
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}
