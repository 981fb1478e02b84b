//! Criterion micro-benchmarks of the per-request work (BENCHMARKS.md, "Micro-benchmarks"):
//! signature verification, Forge Invocation Tokens, Content-Digest, classification per host kind, the policy, and
//! the vault (get+decrypt at several sizes, put+flush). Not run in CI:
//!
//!   cargo bench --bench hot_path
//!
//! PATGATE_BENCH_VAULT_SIZES (default "1000,100000") sets the vault sizes, e.g.
//! "1000,100000,1000000" (the 1M vault takes minutes to fill). PATGATE_BENCH_VAULT_CACHE_MIB
//! sets sled's page cache for those vaults (default: the `vault.cache_capacity_mib` default).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, Method};
use patgate::client::{sign_request, Outgoing};
use patgate::config::Config;
use patgate::policy::{self, Facts, Operation};
use patgate::signature::{digest, KeyRing, Message, SigningKey, Verifier, Window};
use patgate::store::MemoryNonces;
use patgate::vault::{Credential, MasterKey, PatMeta, Vault, VaultOptions};
use secrecy::SecretString;

const BODY: &[u8] =
    br#"{"ref":"refs/heads/PROJ-1-fix-login","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#;
const URL: &str = "https://patgate.example.com:8443/git/ghe/api/v3/repos/acme/api/git/refs";

fn signed(key: &SigningKey, now: u64) -> (Method, HeaderMap) {
    let out = Outgoing {
        method: Method::POST,
        url: URL.into(),
        headers: Vec::new(),
        body: Some(Bytes::from_static(BODY)),
        account: Some("5b10ac8d82e05b22cc7d4ef5".into()),
    };
    let request = sign_request(key, &out, now).expect("sign");
    (request.method().clone(), request.headers().clone())
}

fn signatures(c: &mut Criterion) {
    let now = patgate::clock::unix_now();
    let keys = [
        ("ed25519", SigningKey::generate_ed25519("app")),
        (
            "hmac-sha256",
            SigningKey::hmac("app", &[7u8; 32]).expect("hmac key"),
        ),
    ];
    for (name, key) in keys {
        let ring = KeyRing::from_keys([key.app_key()]).expect("ring");
        let verifier = Verifier::new(ring, Window::new(5, 60).expect("window"), now - 10);
        let nonces = MemoryNonces::new(10_000_000);
        // Each iteration verifies a request signed with its own nonce, as patgate sees
        // them, and records the nonce in the replay cache; signing happens in the setup,
        // outside the measurement.
        c.bench_function(&format!("verify_with_body/{name}"), |b| {
            b.iter_batched(
                || signed(&key, now),
                |(method, headers)| {
                    let msg = Message {
                        method: &method,
                        target_uri: URL,
                        headers: &headers,
                    };
                    let verified = verifier
                        .verify_with_body(&msg, Some(BODY), now)
                        .expect("verifies");
                    nonces
                        .insert(&verified.keyid, &verified.nonce, verified.replay_until, now)
                        .expect("a fresh nonce");
                    verified
                },
                BatchSize::SmallInput,
            )
        });
    }
    let (_, headers) = signed(&keys_ed25519(), now);
    c.bench_function("content_digest/verify_90_bytes", |b| {
        b.iter(|| digest::verify_headers(&headers, BODY).expect("digest"))
    });
    let big = vec![b'x'; 64 * 1024];
    let big_digest = digest::sha256(&big);
    c.bench_function("content_digest/verify_64_KiB", |b| {
        b.iter(|| digest::verify(&big_digest, &big).expect("digest"))
    });
}

fn keys_ed25519() -> SigningKey {
    SigningKey::generate_ed25519("app")
}

/// One integration of each kind, from a config as an admin writes it.
fn config() -> Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"
state_dir = "state"
[master_key]
file = "master-key"
[api]
listen = "127.0.0.1:0"
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"
allowed_client_sans = ["dns:jira"]
[[integrations]]
id = "gh"
kind = "github"
base_url = "https://ghe.example.com"
[[integrations]]
id = "gl"
kind = "gitlab"
base_url = "https://gitlab.example.com"
[[integrations]]
id = "az"
kind = "azure-devops"
base_url = "https://dev.azure.com/acme"
[[integrations]]
id = "cc"
kind = "codecommit"
base_url = "https://codecommit.eu-west-1.amazonaws.com"
region = "eu-west-1"
"#;
    Config::parse(&dir.path().join("patgate.toml"), text).expect("config")
}

/// Integration id, method, path, headers, body.
type Case = (
    &'static str,
    Method,
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static [u8],
);

fn classification(c: &mut Criterion) {
    let config = config();
    let cases: [Case; 8] = [
        ("gh", Method::GET, "/api/v3/repos/acme/api/commits", vec![], b""),
        ("gh", Method::POST, "/api/v3/repos/acme/api/git/refs", vec![], BODY),
        ("gl", Method::GET, "/api/v4/projects/12/repository/commits", vec![], b""),
        ("gl", Method::POST, "/api/v4/projects/12/repository/branches", vec![],
            br#"{"branch":"PROJ-1","ref":"main"}"#),
        ("az", Method::GET, "/acme/_apis/git/repositories/api/commits", vec![], b""),
        ("az", Method::POST, "/acme/_apis/git/repositories/api/refs", vec![],
            br#"[{"name":"refs/heads/PROJ-1","oldObjectId":"0000000000000000000000000000000000000000","newObjectId":"aa218f56b14c9653891f9e74264a383fa43fefbd"}]"#),
        ("cc", Method::POST, "/", vec![("x-amz-target", "CodeCommit_20150413.GetBranch")],
            br#"{"repositoryName":"api","branchName":"main"}"#),
        ("cc", Method::POST, "/", vec![("x-amz-target", "CodeCommit_20150413.CreateBranch")],
            br#"{"repositoryName":"api","branchName":"PROJ-1","commitId":"aa218f56b14c9653891f9e74264a383fa43fefbd"}"#),
    ];
    for (id, method, path, headers, body) in cases {
        let integration = config
            .integrations
            .iter()
            .find(|i| i.id == id)
            .expect("integration");
        let adapter = patgate::hosts::adapter_for(integration);
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.insert(
                http::header::HeaderName::from_static(n),
                http::HeaderValue::from_static(v),
            );
        }
        let operation = adapter.classify(&method, path, &map, body);
        c.bench_function(
            &format!(
                "classify/{}/{method}/{}",
                integration.kind.as_str(),
                operation.as_str()
            ),
            |b| b.iter(|| adapter.classify(&method, path, &map, body)),
        );
    }
}

fn policy_decide(c: &mut Criterion) {
    let facts = Facts {
        operation: Operation::CreateBranch,
        require_user_pat: true,
        host_supports_pats: true,
        user_has_pat: true,
        allow_other_writes: false,
    };
    c.bench_function("policy/decide", |b| {
        b.iter(|| policy::decide(std::hint::black_box(facts)))
    });
}

fn account(i: u64) -> String {
    format!("5b10ac8d82e05b22{i:08x}")
}

fn meta() -> PatMeta {
    PatMeta {
        host_login: "octocat".into(),
        scopes: vec!["repo".into()],
        validated_at: 1,
        created_at: 1,
        updated_at: 1,
        last_used_at: None,
        refused: None,
        expires_at: None,
    }
}

/// Fills a vault with `n` users' PATs, many puts in flight so they share flushes.
fn fill(runtime: &tokio::runtime::Runtime, vault: &std::sync::Arc<Vault>, n: u64) {
    runtime.block_on(async {
        let mut tasks: tokio::task::JoinSet<Result<(), patgate::vault::VaultError>> =
            tokio::task::JoinSet::new();
        for i in 0..n {
            if tasks.len() >= 512 {
                tasks
                    .join_next()
                    .await
                    .expect("task")
                    .expect("join")
                    .expect("put");
            }
            let vault = vault.clone();
            tasks.spawn(async move {
                let pat = SecretString::from(format!("ghp_{i:036}"));
                vault
                    .put_user_pat("gh", &account(i), &Credential::Token(pat), &meta())
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("join").expect("put");
        }
    });
}

fn vault(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sizes: Vec<u64> = std::env::var("PATGATE_BENCH_VAULT_SIZES")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let options = match std::env::var("PATGATE_BENCH_VAULT_CACHE_MIB") {
        Ok(mib) => VaultOptions::default().cache_capacity_bytes(
            mib.trim()
                .parse::<u64>()
                .expect("PATGATE_BENCH_VAULT_CACHE_MIB")
                * 1024
                * 1024,
        ),
        Err(_) => VaultOptions::default(),
    };
    let key = MasterKey::generate();
    for n in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let vault = runtime
            .block_on(Vault::init_with(&state, &key, &options))
            .expect("init");
        let started = Instant::now();
        let vault = std::sync::Arc::new(vault);
        fill(&runtime, &vault, n);
        eprintln!(
            "vault with {n} PATs filled in {:.1} s ({} MiB page cache)",
            started.elapsed().as_secs_f64(),
            options.cache_capacity_bytes / (1024 * 1024)
        );
        let mut i = 0u64;
        c.bench_function(&format!("vault/user_pat_get_decrypt/{n}"), |b| {
            // The reads run inside one task, as on the request path: the figure is the read's
            // cost, not that of entering the runtime once per read.
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        i = (i + 7919) % n;
                        std::hint::black_box(
                            vault
                                .user_pat("gh", &account(i))
                                .await
                                .expect("get")
                                .expect("stored"),
                        );
                    }
                    started.elapsed()
                })
            })
        });
        drop(vault);
        report_dir_size(dir.path(), n);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = runtime
        .block_on(Vault::init(&dir.path().join("state"), &key))
        .expect("init");
    let mut i = 0u64;
    let mut group = c.benchmark_group("vault");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("put_user_pat_and_flush", |b| {
        b.iter(|| {
            i += 1;
            let pat = SecretString::from(format!("ghp_{i:036}"));
            runtime
                .block_on(vault.put_user_pat("gh", &account(i), &Credential::Token(pat), &meta()))
                .expect("put")
        })
    });
    group.finish();
}

fn report_dir_size(dir: &Path, n: u64) {
    fn size(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => size(&e.path()),
                        _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    eprintln!(
        "vault with {n} PATs: {} MiB on disk",
        size(dir) / (1024 * 1024)
    );
}

/// A Forge Invocation Token (RS256, 2048-bit key, signed outside the measurement) through
/// the Forge authenticator: JWS, claims, app and installation, principal, and the `jti` into
/// the replay cache (`require_signature = false`); then the same with the app's Ed25519
/// RFC 9421 signature as well (the default). Each runs on a current-thread runtime's
/// `block_on`: nothing in it waits.
fn forge_tokens(c: &mut Criterion) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    use patgate::authn::{Authenticator as _, Connection, ForgeToken, RequestHead};
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    use rsa::traits::PublicKeyParts as _;

    const APP: &str = "ari:cloud:ecosystem::app/3f6c8e2a-1b7d-4c59-9a0e-5d2f7b8c1a44";
    const INSTALLATION: &str =
        "ari:cloud:ecosystem::installation/7a1e0c55-2f4b-4d3e-8b6a-0c9d1e2f3a4b";
    const KID: &str = "forge/invocation-token/wf-bench";
    const ACCOUNT: &str = "5b10ac8d82e05b22cc7d4ef5";
    let now = patgate::clock::unix_now();
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("rsa key");
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_key.clone());
    let public = rsa_key.to_public_key();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("jwks.json");
    let jwk = serde_json::json!({"keys": [{"kty": "RSA", "kid": KID, "alg": "RS256", "use": "sig",
        "n": B64.encode(public.n().to_bytes_be()), "e": B64.encode(public.e().to_bytes_be())}]});
    std::fs::write(&file, jwk.to_string()).expect("jwks");
    let mut jti = 0u64;
    let mut token = || {
        jti += 1;
        let claims = serde_json::json!({
            "iss": "forge/invocation-token", "aud": APP, "iat": now, "nbf": now, "exp": now + 25,
            "jti": format!("bench-{jti}"), "principal": ACCOUNT,
            "app": {"id": APP, "installationId": INSTALLATION, "appVersion": "2.14.0",
                "environment": {"type": "PRODUCTION", "id": "env"},
                "module": {"type": "jira:issuePanel", "key": "panel"},
                "installation": {"id": INSTALLATION, "contexts": ["ari:cloud:jira::site/5e3b6c2d"]}},
        });
        let input = format!(
            "{}.{}",
            B64.encode(serde_json::json!({"alg": "RS256", "kid": KID}).to_string()),
            B64.encode(claims.to_string())
        );
        let signature = B64.encode(signer.sign(input.as_bytes()).to_vec());
        format!("Bearer {input}.{signature}")
    };
    let ed = SigningKey::generate_ed25519("forge-app");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let connection = Connection {
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
        certificate: None,
    };
    for (name, require_signature) in [("fit_rs256", false), ("fit_rs256+ed25519_signature", true)] {
        let settings = patgate::config::ForgeSettings {
            apps: vec![patgate::config::ForgeApp {
                id: APP.into(),
                environments: vec![patgate::config::ForgeEnvironment::Production],
                installation_ids: vec![INSTALLATION.into()],
                cloud_ids: Vec::new(),
                require_signature,
                signature_keyids: Vec::new(),
            }],
            jwks_url: None,
            jwks_file: Some(file.clone()),
            jwks_proxy: None,
            jwks_roots: patgate::config::TrustRoots::None,
            jwks_extra_ca: None,
            jwks_refresh_cooldown: Duration::from_secs(60),
            jwks_max_age: Duration::from_secs(3600),
            jwks_fetch_timeout: Duration::from_secs(5),
            leeway: Duration::from_secs(5),
        };
        let ring = KeyRing::from_keys([ed.app_key()]).expect("ring");
        let verifier = Verifier::new(ring, Window::new(5, 60).expect("window"), now - 10);
        let forge = ForgeToken::new(
            &settings,
            verifier,
            std::sync::Arc::new(MemoryNonces::new(10_000_000)),
            None,
            std::sync::Arc::new(patgate::metrics::Metrics::new()),
        )
        .expect("forge");
        c.bench_function(&format!("forge/{name}"), |b| {
            b.iter_batched(
                || {
                    let (method, mut headers) = signed(&ed, now);
                    headers.insert(
                        http::header::AUTHORIZATION,
                        token().parse().expect("header"),
                    );
                    (method, headers)
                },
                |(method, headers)| {
                    let head = RequestHead {
                        method: &method,
                        target_uri: URL,
                        headers: &headers,
                        has_body: true,
                    };
                    runtime
                        .block_on(forge.authenticate(&connection, head, now))
                        .expect("a valid Forge call")
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(
    benches,
    signatures,
    forge_tokens,
    classification,
    policy_decide,
    vault
);
criterion_main!(benches);
