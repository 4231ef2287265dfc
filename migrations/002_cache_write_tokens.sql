-- 002_cache_write_tokens: prompt-cache writes, reported by Anthropic
-- (usage.cache_creation_input_tokens) and OpenRouter
-- (prompt_tokens_details.cache_write_tokens), and priced apart from other
-- prompt tokens. Part of prompt_tokens, like cached_tokens (cache reads).
ALTER TABLE usage_events ADD COLUMN cache_write_tokens bigint NOT NULL DEFAULT 0;
