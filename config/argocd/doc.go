// Package argocd holds the Argo CD resource health check for FluxJob
// (health.lua) and the argocd-cm patch that installs it. The Go code here is
// only its test: it runs health.lua the way Argo CD does.
package argocd
