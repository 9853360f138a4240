package identity

import bolt "go.etcd.io/bbolt"

// SetBoltHook makes s call f at named points of a write ("import:checked",
// "import:written"). Set it before using s.
func SetBoltHook(s *BoltStore, f func(stage string)) { s.hook = f }

// CheckBolt runs bbolt's consistency check over s's file.
func CheckBolt(s *BoltStore) error {
	return s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
}

// SetBoltSchema overwrites the schema version (to test refusing newer files).
func SetBoltSchema(s *BoltStore, v uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putUint(tx.Bucket(bktMeta), metaSchema, v) })
}
