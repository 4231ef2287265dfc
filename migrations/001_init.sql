-- 001_init: API keys and usage events.
--
-- Applied by ApplyMigrations (billing/include/tollgate/billing/migrations.hpp)
-- inside one transaction, so every statement here must be transaction-safe
-- (no CREATE INDEX CONCURRENTLY, no VACUUM).
--
-- Money columns are integer nano-USD (1e-9 USD, core/include/tollgate/core/money.hpp);
-- never floating point. Durations are integer milliseconds.

CREATE TABLE api_keys (
  id                    bigserial   PRIMARY KEY,
  name                  text        NOT NULL,
  -- Lowercase hex SHA-256 of the plaintext key (HashApiKey). The plaintext is
  -- shown once at creation; no part of it is stored (listings show
  -- ApiKeyLabel(key_hash), "tg-..." + 8 hex characters of this hash).
  key_hash              text        NOT NULL UNIQUE,
  -- NULL = unlimited.
  credit_limit_nano_usd bigint      NULL CHECK (credit_limit_nano_usd IS NULL OR credit_limit_nano_usd >= 0),
  -- Sum of cost_nano_usd of this key's usage_events, maintained by the usage
  -- recorder in the same transaction that inserts the events.
  spent_nano_usd        bigint      NOT NULL DEFAULT 0,
  created_at            timestamptz NOT NULL DEFAULT now(),
  revoked_at            timestamptz NULL
);

CREATE TABLE usage_events (
  -- The call's request id ("gen-..."), returned to the caller; the idempotency
  -- key of the row (INSERT ... ON CONFLICT (request_id) DO NOTHING).
  request_id        text        PRIMARY KEY,
  -- NULL for calls that never authenticated.
  api_key_id        bigint      NULL REFERENCES api_keys (id),
  model             text        NOT NULL,   -- model slug as requested ("openai/gpt-4o-mini")
  provider          text        NOT NULL,   -- provider display name ("OpenAI", "Local")
  upstream_model    text        NOT NULL,   -- the endpoint's model name at the provider
  -- Token counts as OpenAI reports them: cached_tokens is part of
  -- prompt_tokens, reasoning_tokens part of completion_tokens.
  -- bigint like the int64 counts in C++ (core Usage), so no count the gateway
  -- can hold is refused by the database.
  prompt_tokens     bigint      NOT NULL DEFAULT 0,
  completion_tokens bigint      NOT NULL DEFAULT 0,
  cached_tokens     bigint      NOT NULL DEFAULT 0,
  reasoning_tokens  bigint      NOT NULL DEFAULT 0,
  cost_nano_usd     bigint      NOT NULL DEFAULT 0,
  latency_ms        bigint      NOT NULL DEFAULT 0,  -- request received to last byte sent
  ttft_ms           bigint      NULL,                -- time to first token; NULL if none
  status            int         NOT NULL,            -- HTTP status returned to the caller
  finish_reason     text        NULL,                -- "stop", "length", ...; NULL on error
  streamed          bool        NOT NULL DEFAULT false,
  cancelled         bool        NOT NULL DEFAULT false,
  usage_estimated   bool        NOT NULL DEFAULT false,  -- upstream never reported usage
  error_code        text        NULL,                -- OpenAI error code/type on failure
  created_at        timestamptz NOT NULL DEFAULT now(),
  finished_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX usage_events_api_key_created_idx ON usage_events (api_key_id, created_at);
CREATE INDEX usage_events_model_created_idx ON usage_events (model, created_at);
