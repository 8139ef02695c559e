-- What each agent invocation used, measured by its cgroup (issue 18): CPU time, peak memory,
-- peak process count and the limit that stopped it, as a JSON object (NULL without cgroups).
ALTER TABLE steps ADD COLUMN resources TEXT CHECK (resources IS NULL OR json_valid(resources));
