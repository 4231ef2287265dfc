-- 005_leases: the lease protocol of CreditGuard
-- (billing/include/tollgate/billing/credit_guard.hpp) as functions, so each
-- step is one round trip and runs under the pot owner's row lock. The grant
-- and revival rules mirror DecideGrant and KeepOnRevive in
-- billing/src/credit_pots.cpp; tests/billing/credit_guard_pgtest.cpp compares
-- the two.
--
-- Periods travel as integer microseconds since the Unix epoch (exact, and
-- easy to pass in arrays). Amounts are nano-USD.

CREATE FUNCTION tollgate_micros_ts(us bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$ SELECT 'epoch'::timestamptz + us * interval '1 microsecond' $$;

CREATE FUNCTION tollgate_ts_micros(ts timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT (extract(epoch FROM ts) * 1000000)::bigint $$;

-- Capacity of a pot, taking the owner row's lock FOR NO KEY UPDATE (so
-- grants, revivals and the usage writer, which updates the same rows,
-- serialise per owner; inserts that only reference the row, like ledger rows,
-- are not blocked). NULL = unlimited: a key without a limit, an account without a
-- budget, a postpaid account's credits. 0 for an owner that does not exist.
CREATE FUNCTION tollgate_pot_capacity(p_scope text, p_owner bigint, p_period timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  v_limit bigint;
  v_prepaid boolean;
  v_usage bigint;
BEGIN
  IF p_scope = 'credits' THEN
    SELECT balance_nano_usd, prepaid INTO v_limit, v_prepaid FROM accounts WHERE id = p_owner FOR NO KEY UPDATE;
    IF NOT FOUND THEN RETURN 0; END IF;
    IF NOT v_prepaid THEN RETURN NULL; END IF;
    RETURN v_limit;
  ELSIF p_scope = 'key' THEN
    SELECT credit_limit_nano_usd INTO v_limit FROM api_keys WHERE id = p_owner FOR NO KEY UPDATE;
    IF NOT FOUND THEN RETURN 0; END IF;
  ELSIF p_scope = 'budget' THEN
    SELECT budget_nano_usd INTO v_limit FROM accounts WHERE id = p_owner FOR NO KEY UPDATE;
    IF NOT FOUND THEN RETURN 0; END IF;
  ELSE
    RAISE EXCEPTION 'unknown pot scope %', p_scope USING ERRCODE = '22023';
  END IF;
  IF v_limit IS NULL THEN RETURN NULL; END IF;
  SELECT usage_nano_usd INTO v_usage FROM period_usage
   WHERE scope = p_scope AND owner_id = p_owner AND period_start = p_period;
  RETURN v_limit - COALESCE(v_usage, 0);
END $$;

-- Sum of the other replicas' unexpired leases of a pot.
CREATE FUNCTION tollgate_pot_leased_by_others(p_replica text, p_scope text, p_owner bigint,
                                              p_period timestamptz)
RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT COALESCE(sum(amount_nano_usd), 0)::bigint FROM credit_leases
   WHERE scope = p_scope AND owner_id = p_owner AND period_start = p_period
     AND replica_id <> p_replica AND expires_at > now()
$$;

-- Leases more of a pot to p_replica: with room = capacity - the other
-- replicas' unexpired leases - this replica's kept lease,
--   granted = min(max(need, clamp(room / divisor, min_chunk, max_chunk)), room)
-- (unlimited: max(need, max_chunk)). When the room cannot cover the need and
-- p_calls (the worst cases of the waiting calls, in arrival order) is not
-- empty, only what the calls that fit lack is leased instead: the calls are
-- taken in order while they fit in p_free (what the replica holds free) +
-- room, and granted = min(max(their sum - p_free, 0), room); a refused call
-- then leases nothing that other replicas could use. An expired own lease is
-- revived with only what still fits (lost = the rest). The lease then
-- expires p_ttl_ms from now. Returns granted, the lease amount after it,
-- lost, room (before the grant; NULL = unlimited) and the capacity (NULL =
-- unlimited).
CREATE FUNCTION tollgate_lease_grant(p_replica text, p_scope text, p_owner bigint, p_period_us bigint,
                                     p_need bigint, p_divisor bigint, p_min_chunk bigint,
                                     p_max_chunk bigint, p_ttl_ms bigint, p_free bigint, p_calls bigint[],
                                     OUT granted bigint, OUT lease_amount bigint, OUT lost bigint,
                                     OUT room bigint, OUT capacity bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v_period timestamptz := tollgate_micros_ts(p_period_us);
  v_others bigint;
  v_own bigint;
  v_own_expires timestamptz;
  v_has_own boolean;
  v_keep bigint;
  v_chunk bigint;
  v_free bigint := GREATEST(COALESCE(p_free, 0), 0);
  v_call bigint;
  v_fit bigint;
BEGIN
  capacity := tollgate_pot_capacity(p_scope, p_owner, v_period);
  v_others := tollgate_pot_leased_by_others(p_replica, p_scope, p_owner, v_period);
  SELECT amount_nano_usd, expires_at INTO v_own, v_own_expires FROM credit_leases
   WHERE replica_id = p_replica AND scope = p_scope AND owner_id = p_owner AND period_start = v_period
   FOR NO KEY UPDATE;
  v_has_own := FOUND;
  v_keep := COALESCE(v_own, 0);
  lost := 0;
  IF v_has_own AND v_own_expires <= now() AND capacity IS NOT NULL THEN
    v_keep := LEAST(v_own, GREATEST(capacity - v_others, 0));
    lost := v_own - v_keep;
  END IF;
  IF capacity IS NULL THEN
    room := NULL;
    granted := GREATEST(GREATEST(p_need, 0), p_max_chunk);
  ELSE
    room := GREATEST(capacity - v_others - v_keep, 0);
    IF GREATEST(p_need, 0) > room AND COALESCE(cardinality(p_calls), 0) > 0 THEN
      v_fit := 0;
      FOREACH v_call IN ARRAY p_calls LOOP
        v_call := GREATEST(COALESCE(v_call, 0), 0);
        IF v_call <= v_free + room - v_fit THEN
          v_fit := v_fit + v_call;
        END IF;
      END LOOP;
      granted := LEAST(GREATEST(v_fit - v_free, 0), room);
    ELSE
      v_chunk := LEAST(GREATEST(room / GREATEST(p_divisor, 1), p_min_chunk), GREATEST(p_min_chunk, p_max_chunk));
      granted := LEAST(GREATEST(GREATEST(p_need, 0), v_chunk), room);
    END IF;
  END IF;
  lease_amount := v_keep + granted;
  IF v_has_own THEN
    UPDATE credit_leases
       SET amount_nano_usd = lease_amount, expires_at = now() + p_ttl_ms * interval '1 millisecond'
     WHERE replica_id = p_replica AND scope = p_scope AND owner_id = p_owner AND period_start = v_period;
  ELSIF lease_amount > 0 THEN
    INSERT INTO credit_leases (replica_id, scope, owner_id, period_start, amount_nano_usd, expires_at)
    VALUES (p_replica, p_scope, p_owner, v_period, lease_amount, now() + p_ttl_ms * interval '1 millisecond');
  END IF;
END $$;

-- Gives back unused lease: amount -= the given amount (never below 0) for
-- each listed pot of p_replica (the arrays are parallel; pots unique). Rows
-- left at 0 are deleted: they back nothing (amount = free + reserved +
-- settled-not-yet-written). Returns the total asked for on rows that exist.
CREATE FUNCTION tollgate_lease_return(p_replica text, p_scopes text[], p_owners bigint[],
                                      p_periods_us bigint[], p_amounts bigint[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  v_total bigint;
BEGIN
  PERFORM 1 FROM credit_leases l
   WHERE l.replica_id = p_replica
     AND (l.scope, l.owner_id, tollgate_ts_micros(l.period_start)) IN
         (SELECT * FROM unnest(p_scopes, p_owners, p_periods_us))
   ORDER BY l.scope, l.owner_id, l.period_start FOR NO KEY UPDATE;
  WITH r AS (
    SELECT * FROM unnest(p_scopes, p_owners, p_periods_us, p_amounts) AS t(scope, owner_id, period_us, amount)
  ), changed AS (
    UPDATE credit_leases l
       SET amount_nano_usd = GREATEST(l.amount_nano_usd - GREATEST(r.amount, 0), 0)
      FROM r
     WHERE l.replica_id = p_replica AND l.scope = r.scope AND l.owner_id = r.owner_id
       AND l.period_start = tollgate_micros_ts(r.period_us)
    RETURNING GREATEST(r.amount, 0) AS taken
  )
  SELECT COALESCE(sum(taken), 0)::bigint INTO v_total FROM changed;
  DELETE FROM credit_leases WHERE replica_id = p_replica AND amount_nano_usd = 0;
  RETURN v_total;
END $$;

-- Renews every lease of p_replica for p_ttl_ms. Unexpired leases just get the
-- new expiry. An expired one (the replica could not renew in time) is revived
-- with what still fits next to the other replicas' unexpired leases, under
-- the owner's row lock; `lost` says how much did not. Rows at 0 are deleted.
-- Returns every remaining lease of the replica; a pot the replica thinks it
-- holds that is not among them has no lease row any more.
CREATE FUNCTION tollgate_lease_renew(p_replica text, p_ttl_ms bigint)
RETURNS TABLE (scope text, owner_id bigint, period_us bigint, amount bigint, lost bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v_row record;
  v_capacity bigint;
  v_others bigint;
  v_keep bigint;
  v_lost jsonb := '{}';
  v_key text;
BEGIN
  DELETE FROM credit_leases l WHERE l.replica_id = p_replica AND l.amount_nano_usd = 0;
  FOR v_row IN
    SELECT l.scope, l.owner_id, l.period_start, l.amount_nano_usd FROM credit_leases l
     WHERE l.replica_id = p_replica AND l.expires_at <= now()
     ORDER BY l.scope, l.owner_id, l.period_start
  LOOP
    v_capacity := tollgate_pot_capacity(v_row.scope, v_row.owner_id, v_row.period_start);
    v_others := tollgate_pot_leased_by_others(p_replica, v_row.scope, v_row.owner_id, v_row.period_start);
    v_keep := v_row.amount_nano_usd;
    IF v_capacity IS NOT NULL THEN
      v_keep := LEAST(v_keep, GREATEST(v_capacity - v_others, 0));
    END IF;
    IF v_keep < v_row.amount_nano_usd THEN
      UPDATE credit_leases l SET amount_nano_usd = v_keep
       WHERE l.replica_id = p_replica AND l.scope = v_row.scope AND l.owner_id = v_row.owner_id
         AND l.period_start = v_row.period_start;
      v_key := v_row.scope || '/' || v_row.owner_id || '/' || tollgate_ts_micros(v_row.period_start);
      v_lost := v_lost || jsonb_build_object(v_key, v_row.amount_nano_usd - v_keep);
    END IF;
  END LOOP;
  -- Lease rows are locked in (scope, owner_id, period_start) order, as the
  -- usage writer should lock them, so the two seldom deadlock.
  PERFORM 1 FROM credit_leases l WHERE l.replica_id = p_replica
   ORDER BY l.scope, l.owner_id, l.period_start FOR NO KEY UPDATE;
  UPDATE credit_leases l SET expires_at = now() + p_ttl_ms * interval '1 millisecond'
   WHERE l.replica_id = p_replica;
  RETURN QUERY
    SELECT l.scope, l.owner_id, tollgate_ts_micros(l.period_start), l.amount_nano_usd,
           COALESCE((v_lost ->> (l.scope || '/' || l.owner_id || '/' || tollgate_ts_micros(l.period_start)))::bigint, 0)
      FROM credit_leases l
     WHERE l.replica_id = p_replica
     ORDER BY 1, 2, 3;
END $$;

-- The replica lock: a session-level advisory lock on the stable id of a
-- replica id (the part before its last ':', the whole id without one). A
-- CreditGuard holds it for its lifetime on a connection of its own, so no two
-- live processes share a stable id (a gateway started on a copy of another's
-- usage spool directory is refused) and only the holder may drop the leases of
-- the stable id's earlier boots.
-- The lock key: pg_try_advisory_lock(tollgate_replica_lock_key(replica id)).
CREATE FUNCTION tollgate_replica_lock_key(p_replica text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
  SELECT hashtextextended('tollgate-replica:' || regexp_replace(p_replica, ':[^:]*$', ''), 0)
$$;

-- Whether the calling session holds the replica lock of p_replica's stable id
-- (pg_locks shows a bigint advisory key as classid = its high half, objid =
-- its low half, objsubid = 1).
CREATE FUNCTION tollgate_replica_lock_held(p_replica text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
  SELECT EXISTS (
    SELECT 1 FROM pg_locks
     WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND ((classid::bigint << 32) | objid::bigint) = tollgate_replica_lock_key(p_replica))
$$;

-- Deletes the leases of the earlier boots of p_replica's stable id (the part
-- before the last ':'), e.g. after the spool of a crashed boot was replayed.
-- Only a session that holds the stable id's replica lock may (SQLSTATE 55P03
-- otherwise): another live process with the same stable id would lose the
-- leases its calls are admitted under. Returns the number of rows deleted.
CREATE FUNCTION tollgate_lease_drop_earlier_boots(p_replica text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  v_stable text := regexp_replace(p_replica, ':[^:]*$', '');
  v_count bigint;
BEGIN
  IF NOT tollgate_replica_lock_held(p_replica) THEN
    RAISE EXCEPTION 'this session does not hold the replica lock of stable id %', v_stable
      USING ERRCODE = '55P03';
  END IF;
  DELETE FROM credit_leases
   WHERE replica_id <> p_replica AND position(':' IN replica_id) > 0
     AND regexp_replace(replica_id, ':[^:]*$', '') = v_stable;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END $$;

-- What an admin may take off an account's balance now without taking what
-- gateway replicas hold leased: balance - the unexpired credits leases
-- (never below 0), with the account row locked until the caller's
-- transaction ends. Call it in the transaction that writes the 'debit' ledger
-- row, and refuse removals above it; that keeps the sum of unexpired leases
-- <= the balance, which zero overspend needs.
CREATE FUNCTION tollgate_credits_removable(p_account bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  v_balance bigint;
BEGIN
  SELECT balance_nano_usd INTO v_balance FROM accounts WHERE id = p_account FOR NO KEY UPDATE;
  IF NOT FOUND THEN RETURN 0; END IF;
  RETURN GREATEST(v_balance - tollgate_pot_leased_by_others('', 'credits', p_account, 'epoch'), 0);
END $$;

-- Keys that never reset had their all-time spend as their limit's usage
-- (004 keeps "the key's credit limit ... never reset"): carry it into the
-- 'none' period so the key pot's capacity (limit - period usage) starts right.
INSERT INTO period_usage (scope, owner_id, period_start, usage_nano_usd)
SELECT 'key', id, 'epoch', spent_nano_usd FROM api_keys WHERE spent_nano_usd > 0
ON CONFLICT DO NOTHING;
