package identity

// SetRedisImportScriptMax sets the largest import that s commits with one
// script; larger ones take the WATCH/MULTI/EXEC path.
func SetRedisImportScriptMax(s *RedisStore, n int) { s.importScriptMax = n }

// SetRedisImportHook sets a function that runs between a large import's
// check and its EXEC.
func SetRedisImportHook(s *RedisStore, fn func()) { s.testHookImport = fn }
