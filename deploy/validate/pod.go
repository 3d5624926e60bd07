package validate

import (
	"errors"
	"fmt"
	"path"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// SidecarName is the name of the sidecar's container in the pod.
const SidecarName = "zimmer-sidecar"

// Pod is a bundle's Deployment taken apart: the sidecar (an init
// container), the app containers, and the sidecar's configuration as the
// mounted ConfigMap and the container's environment make it.
type Pod struct {
	Deployment *appsv1.Deployment
	Spec       *corev1.PodSpec
	Sidecar    *corev1.Container
	Apps       []*corev1.Container
	ConfigPath string // the -config file inside the sidecar container
	ConfigText string // that file, from its ConfigMap
	Config     *SidecarConfig
}

// Inspect finds the parts of the bundle's one Deployment. It fails when
// the bundle is not shaped like a sidecar deployment at all; Check then
// reports what is wrong with the shape.
func Inspect(b *Bundle) (*Pod, error) {
	if len(b.Deployments) != 1 {
		return nil, fmt.Errorf("want exactly one Deployment, got %d", len(b.Deployments))
	}
	d := b.Deployments[0]
	p := &Pod{Deployment: d, Spec: &d.Spec.Template.Spec}
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == SidecarName {
			p.Sidecar = &p.Spec.InitContainers[i]
		}
	}
	if p.Sidecar == nil {
		return nil, fmt.Errorf("deployment %s: no init container named %s", d.Name, SidecarName)
	}
	for i := range p.Spec.Containers {
		p.Apps = append(p.Apps, &p.Spec.Containers[i])
	}
	if len(p.Apps) == 0 {
		return nil, fmt.Errorf("deployment %s: no app container", d.Name)
	}

	var err error
	if p.ConfigPath, err = configPath(p.Sidecar); err != nil {
		return nil, err
	}
	if p.ConfigText, err = p.configText(b); err != nil {
		return nil, err
	}
	if p.Config, err = EffectiveConfig(p.ConfigText, p.Sidecar.Env); err != nil {
		return nil, fmt.Errorf("sidecar config %s: %w", p.ConfigPath, err)
	}
	return p, nil
}

// configPath finds the file the sidecar runs with: "-config FILE" in its
// arguments, else $ZIMMER_SIDECAR_CONFIG.
func configPath(c *corev1.Container) (string, error) {
	args := append(append([]string{}, c.Command...), c.Args...)
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "-config="); ok {
			return v, nil
		}
		if a == "-config" && i+1 < len(args) {
			return args[i+1], nil
		}
	}
	for _, e := range c.Env {
		if e.Name == envConfig && e.Value != "" {
			return e.Value, nil
		}
	}
	return "", errors.New("sidecar: no -config argument and no " + envConfig)
}

// configText reads the config file from the ConfigMap mounted at its
// directory.
func (p *Pod) configText(b *Bundle) (string, error) {
	m, v := p.MountFor(p.Sidecar, p.ConfigPath)
	if m == nil || v.ConfigMap == nil {
		return "", fmt.Errorf("sidecar: config %s is not on a ConfigMap volume", p.ConfigPath)
	}
	key := strings.TrimPrefix(p.ConfigPath, strings.TrimSuffix(m.MountPath, "/")+"/")
	if m.SubPath != "" {
		key = m.SubPath
	}
	cm := b.ConfigMap(v.ConfigMap.Name)
	if cm == nil {
		return "", fmt.Errorf("sidecar: ConfigMap %s (config %s) is not in the bundle",
			v.ConfigMap.Name, p.ConfigPath)
	}
	text, ok := cm.Data[key]
	if !ok {
		return "", fmt.Errorf("ConfigMap %s has no key %s", cm.Name, key)
	}
	return text, nil
}

// Volume returns the pod's volume named name, or nil.
func (p *Pod) Volume(name string) *corev1.Volume {
	for i := range p.Spec.Volumes {
		if p.Spec.Volumes[i].Name == name {
			return &p.Spec.Volumes[i]
		}
	}
	return nil
}

// MountFor returns the mount of c that holds file (the deepest one) and its
// volume, or nils.
func (p *Pod) MountFor(c *corev1.Container, file string) (*corev1.VolumeMount, *corev1.Volume) {
	file = path.Clean(file)
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		dir := path.Clean(m.MountPath)
		if file != dir && !strings.HasPrefix(file, strings.TrimSuffix(dir, "/")+"/") {
			continue
		}
		if best == nil || len(dir) > len(path.Clean(best.MountPath)) {
			best = m
		}
	}
	if best == nil {
		return nil, nil
	}
	return best, p.Volume(best.Name)
}

// Containers returns every container of the pod, init containers first.
func (p *Pod) Containers() []*corev1.Container {
	var all []*corev1.Container
	for i := range p.Spec.InitContainers {
		all = append(all, &p.Spec.InitContainers[i])
	}
	return append(all, p.Apps...)
}

// ResolvePort finds the container port that port names (by name or number)
// in any container of the pod, and its container.
func (p *Pod) ResolvePort(port intstr.IntOrString) (*corev1.ContainerPort, *corev1.Container) {
	for _, c := range p.Containers() {
		for i := range c.Ports {
			cp := &c.Ports[i]
			if port.Type == intstr.String && cp.Name == port.StrVal ||
				port.Type == intstr.Int && cp.ContainerPort == port.IntVal {
				return cp, c
			}
		}
	}
	return nil, nil
}

// SidecarPort returns the sidecar's container port named name, or 0.
func (p *Pod) SidecarPort(name string) int32 {
	for _, cp := range p.Sidecar.Ports {
		if cp.Name == name {
			return cp.ContainerPort
		}
	}
	return 0
}
