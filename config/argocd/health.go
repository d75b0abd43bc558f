package argocd

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// HealthLua is health.lua, the Argo CD resource health check for
// fluxjob.io/FluxJob.
//
//go:embed health.lua
var HealthLua string

// Health is what Argo CD reads from the table a health check returns.
type Health struct {
	Status  string
	Message string
}

// Evaluate runs script on obj (a FluxJob as the API server returns it,
// decoded from JSON) as Argo CD runs a custom health check from argocd-cm
// (useOpenLibs false): a state without the standard libraries, then
// package, base and table opened, a one second deadline, the object as the
// global "obj", and the returned table read as {status, message}. Argo CD
// also opens a restricted os library; health.lua does not use it, so it is
// left out here and a call to os fails.
func Evaluate(script string, obj map[string]any) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.fn), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return Health{}, fmt.Errorf("opening Lua library %q: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLuaValue(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, fmt.Errorf("health.lua failed: %w", err)
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("health.lua returned %s, want a table", l.Get(-1).Type())
	}
	var hs Health
	var err error
	ret.ForEach(func(k, v lua.LValue) {
		s, isString := v.(lua.LString)
		switch k.String() {
		case "status", "message":
			if !isString {
				err = fmt.Errorf("%s is a %s, want a string", k.String(), v.Type())
			}
			if k.String() == "status" {
				hs.Status = string(s)
			} else {
				hs.Message = string(s)
			}
		default:
			err = fmt.Errorf("unexpected key %q in the returned table", k.String())
		}
	})
	return hs, err
}

// toLuaValue converts a decoded Kubernetes object the way Argo CD's
// util/lua decodeValue does: maps and slices become tables, numbers become
// numbers.
func toLuaValue(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case int32:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLuaValue(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetH(lua.LString(k), toLuaValue(l, item))
		}
		return t
	default:
		return lua.LNil
	}
}
