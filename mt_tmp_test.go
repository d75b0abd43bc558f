package main
import ("testing"; metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"; "encoding/json")
func TestMT(t *testing.T){
 for _, s := range []string{`"2026-11-28T18:00:00Z"`, `"2026-11-28T18:00:00.123456Z"`, `"2026-11-28T18:00:00.1Z"`, `"2026-11-28T18:00:00+02:00"`} {
  var m metav1.MicroTime
  err := json.Unmarshal([]byte(s), &m)
  b,_ := json.Marshal(m)
  t.Log(s, err, m.Time, string(b))
 }
}
