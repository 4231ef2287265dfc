-- 004_ledger: accounts that own credits, a credit ledger, key and account
-- limits with reset periods, leases of spendable credit to gateway replicas,
-- rate-limit counters shared between replicas, BYOK provider keys, and the
-- price snapshot of every cost. billing/README.md explains the design.
--
-- Money is integer nano-USD (bigint); never floating point.

-- ---------------------------------------------------------------- accounts

CREATE TABLE accounts (
  id                   bigserial   PRIMARY KEY,
  name                 text        NOT NULL,
  -- Prepaid: a call needs credits (balance) to start, and the balance never
  -- goes below zero. Postpaid: the balance records spend and may go negative.
  prepaid              boolean     NOT NULL DEFAULT true,
  -- Always = sum(ledger_entries.amount_nano_usd) of the account (checked by
  -- `tollgate ledger check`); written only together with a ledger row.
  balance_nano_usd     bigint      NOT NULL DEFAULT 0,
  -- A budget shared by all the account's keys, per budget period; NULL = none.
  budget_nano_usd      bigint      NULL CHECK (budget_nano_usd IS NULL OR budget_nano_usd >= 0),
  budget_reset         text        NOT NULL DEFAULT 'none'
                                   CHECK (budget_reset IN ('none', 'daily', 'weekly', 'monthly')),
  -- Warning threshold (reported in a response header and a metric) of the
  -- budget, or of the balance for prepaid accounts without a budget.
  soft_limit_nano_usd  bigint      NULL CHECK (soft_limit_nano_usd IS NULL OR soft_limit_nano_usd >= 0),
  -- Fee charged on calls that use the account's own provider key (BYOK), in
  -- millionths of the provider's cost (50000 = 5%).
  byok_fee_ppm         bigint      NOT NULL DEFAULT 50000 CHECK (byok_fee_ppm >= 0),
  created_at           timestamptz NOT NULL DEFAULT now(),
  disabled_at          timestamptz NULL
);

-- Every credit movement. amount > 0 adds credits (top-up, refund), < 0 takes
-- them (usage, removal). The idempotency key makes each movement happen once
-- however often it is sent: usage rows use their request id.
CREATE TABLE ledger_entries (
  id               bigserial   PRIMARY KEY,
  account_id       bigint      NOT NULL REFERENCES accounts (id),
  amount_nano_usd  bigint      NOT NULL,
  -- credit (admin top-up), debit (admin removal), usage (a call), refund (a call's charge returned)
  kind             text        NOT NULL CHECK (kind IN ('credit', 'debit', 'usage', 'refund')),
  idempotency_key  text        NOT NULL UNIQUE,
  reason           text        NOT NULL DEFAULT '',
  request_id       text        NULL,
  api_key_id       bigint      NULL,
  created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, id);

-- ---------------------------------------------------------------- keys

ALTER TABLE api_keys ADD COLUMN account_id bigint NULL REFERENCES accounts (id);
-- credit_limit_nano_usd is now the key's spending limit per limit period;
-- spent_nano_usd stays the key's usage of all time.
ALTER TABLE api_keys ADD COLUMN limit_reset text NOT NULL DEFAULT 'none'
  CHECK (limit_reset IN ('none', 'daily', 'weekly', 'monthly'));
ALTER TABLE api_keys ADD COLUMN soft_limit_nano_usd bigint NULL
  CHECK (soft_limit_nano_usd IS NULL OR soft_limit_nano_usd >= 0);
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz NULL;
-- Model slugs the key may call; NULL = all.
ALTER TABLE api_keys ADD COLUMN allowed_models text[] NULL;
-- Rate limits; NULL = none.
ALTER TABLE api_keys ADD COLUMN requests_per_minute bigint NULL CHECK (requests_per_minute IS NULL OR requests_per_minute > 0);
ALTER TABLE api_keys ADD COLUMN tokens_per_minute bigint NULL CHECK (tokens_per_minute IS NULL OR tokens_per_minute > 0);
ALTER TABLE api_keys ADD COLUMN max_concurrent bigint NULL CHECK (max_concurrent IS NULL OR max_concurrent > 0);
ALTER TABLE api_keys ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Every existing key gets an account of its own: postpaid, so the key's
-- credit limit (now its spending limit, never reset) keeps working as before.
DO $$
DECLARE k record;
DECLARE a bigint;
BEGIN
  FOR k IN SELECT id, name FROM api_keys ORDER BY id LOOP
    INSERT INTO accounts (name, prepaid) VALUES (k.name, false) RETURNING id INTO a;
    UPDATE api_keys SET account_id = a WHERE id = k.id;
  END LOOP;
END $$;
ALTER TABLE api_keys ALTER COLUMN account_id SET NOT NULL;
CREATE INDEX api_keys_account_idx ON api_keys (account_id);

-- ---------------------------------------------------------------- limit periods

-- Start of the period that `at` falls in, in UTC: 'daily' at midnight,
-- 'weekly' on Monday, 'monthly' on the 1st (OpenRouter resets its key limits
-- at midnight UTC the same way); 'none' is one period since the epoch.
CREATE FUNCTION tollgate_period_start(reset text, at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE reset
    WHEN 'daily'   THEN date_trunc('day',   at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    WHEN 'weekly'  THEN date_trunc('week',  at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    WHEN 'monthly' THEN date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    ELSE 'epoch'::timestamptz
  END
$$;

-- Spend per limit period: scope 'key' (owner = api_keys.id) or 'budget'
-- (owner = accounts.id). Added to by the usage writer, for the period in which
-- each call was admitted (usage_events.created_at).
CREATE TABLE period_usage (
  scope           text        NOT NULL CHECK (scope IN ('key', 'budget')),
  owner_id        bigint      NOT NULL,
  period_start    timestamptz NOT NULL,
  usage_nano_usd  bigint      NOT NULL DEFAULT 0,
  PRIMARY KEY (scope, owner_id, period_start)
);

-- ---------------------------------------------------------------- leases

-- Spendable credit leased to one gateway process (replica_id: its stable id
-- and a boot nonce). A pot is (scope, owner_id, period_start):
--   'credits' (owner = accounts.id, prepaid accounts; period 'epoch'),
--   'key'     (owner = api_keys.id, keys with a limit),
--   'budget'  (owner = accounts.id, accounts with a budget).
-- Capacity of a pot: the balance, or the limit less the period's usage.
-- The sum of a pot's unexpired leases never exceeds its capacity when they
-- are granted; the usage writer takes each call's cost off the lease it was
-- admitted under in the same transaction that takes it off the balance or
-- adds it to the period's usage, so the inequality keeps holding.
CREATE TABLE credit_leases (
  replica_id       text        NOT NULL,
  scope            text        NOT NULL CHECK (scope IN ('credits', 'key', 'budget')),
  owner_id         bigint      NOT NULL,
  period_start     timestamptz NOT NULL,
  amount_nano_usd  bigint      NOT NULL CHECK (amount_nano_usd >= 0),
  expires_at       timestamptz NOT NULL,
  PRIMARY KEY (replica_id, scope, owner_id, period_start)
);
CREATE INDEX credit_leases_pot_idx ON credit_leases (scope, owner_id, period_start);

-- ---------------------------------------------------------------- rate limits

-- Requests and tokens per key per minute window, per replica, and the calls
-- each replica has in flight; replicas upsert their own row and read the
-- others' (billing/include/tollgate/billing/rate_limiter.hpp).
CREATE TABLE rate_counters (
  api_key_id    bigint      NOT NULL,
  window_start  timestamptz NOT NULL,
  replica_id    text        NOT NULL,
  requests      bigint      NOT NULL DEFAULT 0,
  tokens        bigint      NOT NULL DEFAULT 0,
  in_flight     bigint      NOT NULL DEFAULT 0,
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (api_key_id, window_start, replica_id)
);

-- ---------------------------------------------------------------- BYOK

-- An account's own key for a provider (BYOK), AES-256-GCM encrypted with the
-- key in TOLLGATE_SECRET_KEY (billing/include/tollgate/billing/secret_box.hpp);
-- never returned by any API.
CREATE TABLE provider_keys (
  account_id   bigint      NOT NULL REFERENCES accounts (id),
  provider     text        NOT NULL,  -- a provider id of the config
  ciphertext   bytea       NOT NULL,  -- nonce || ciphertext || tag
  label        text        NOT NULL,  -- "sk-...abcd": the last 4 characters, for listings
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, provider)
);

-- ---------------------------------------------------------------- usage

ALTER TABLE usage_events ADD COLUMN account_id bigint NULL;
-- The replica lease the call was admitted under (credit_leases.replica_id), or NULL.
ALTER TABLE usage_events ADD COLUMN lease_holder text NULL;
-- The prices the cost was computed from: {"endpoint": id, "tier": n,
-- "prompt": nano-USD per token, "completion": ..., "cached_read": ...,
-- "cache_write": ..., "reasoning": ..., "request": ...}. A later price change
-- never rewrites a stored cost.
ALTER TABLE usage_events ADD COLUMN price_snapshot jsonb NULL;
-- BYOK: the provider's cost, paid by the account at its provider; cost_nano_usd is then the fee.
ALTER TABLE usage_events ADD COLUMN byok boolean NOT NULL DEFAULT false;
ALTER TABLE usage_events ADD COLUMN provider_cost_nano_usd bigint NULL;
UPDATE usage_events u SET account_id = k.account_id FROM api_keys k WHERE u.api_key_id = k.id;

-- ---------------------------------------------------------------- change notifications

-- Gateways LISTEN on tollgate_billing and reload just what changed: payload
-- 'key:<id>' or 'account:<id>' (billing/include/tollgate/billing/key_cache.hpp).
CREATE FUNCTION tollgate_notify_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('tollgate_billing', 'key:' || NEW.id);
  RETURN NULL;
END $$;
CREATE FUNCTION tollgate_notify_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('tollgate_billing', 'account:' || NEW.id);
  RETURN NULL;
END $$;
-- Not on spent_nano_usd / balance changes made by the usage writer (every
-- call): only on what an admin changes.
CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OF name, credit_limit_nano_usd, revoked_at, limit_reset,
  soft_limit_nano_usd, expires_at, allowed_models, requests_per_minute, tokens_per_minute, max_concurrent,
  account_id ON api_keys FOR EACH ROW EXECUTE FUNCTION tollgate_notify_key();
CREATE TRIGGER accounts_notify AFTER INSERT OR UPDATE OF name, prepaid, budget_nano_usd, budget_reset,
  soft_limit_nano_usd, byok_fee_ppm, disabled_at ON accounts FOR EACH ROW EXECUTE FUNCTION tollgate_notify_account();
