package validate

import (
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Essentials is what a deployment of the sidecar does, without the names
// and labels that differ between the plain manifests and the chart: the
// chart's default render must have the same essentials as the manifests.
type Essentials struct {
	Replicas         int32
	Strategy         appsv1.DeploymentStrategyType
	TerminationGrace int64
	PodSecurity      *corev1.PodSecurityContext
	Sidecar          ContainerEssentials
	Apps             []ContainerEssentials
	Config           SidecarConfig
	OtherConfig      map[string]any // the rest of the TOML file
	ServicePorts     []ServicePort
	OpenPorts        []string // ports a NetworkPolicy opens to everyone
	Claims           []ClaimEssentials
}

// ContainerEssentials is one container's part of Essentials.
type ContainerEssentials struct {
	Image         string
	RestartPolicy string
	Command       []string
	Args          []string
	Env           []corev1.EnvVar // the app's; the sidecar's are in Config
	Ports         []corev1.ContainerPort
	Probes        map[string]corev1.ProbeHandler
	PreStop       *corev1.LifecycleHandler
	Resources     corev1.ResourceRequirements
	Security      *corev1.SecurityContext
	Mounts        []Mount
}

// Mount is a container's mount and what backs it.
type Mount struct {
	Path     string
	ReadOnly bool
	Source   string // configMap, secret, persistentVolumeClaim, emptyDir
}

// ServicePort is a Service port and the container port it reaches.
type ServicePort struct {
	Port   int32
	Target string
}

// ClaimEssentials is a PersistentVolumeClaim's size and access.
type ClaimEssentials struct {
	AccessModes []corev1.PersistentVolumeAccessMode
	Size        string
}

// EssentialsOf extracts the essentials of a bundle that Inspect accepts.
func EssentialsOf(b *Bundle, p *Pod) Essentials {
	e := Essentials{
		Replicas:    1,
		Strategy:    p.Deployment.Spec.Strategy.Type,
		PodSecurity: p.Spec.SecurityContext,
		Sidecar:     containerEssentials(p, p.Sidecar),
		Config:      *p.Config,
		OpenPorts:   OpenPorts(b, p),
	}
	e.Sidecar.Env = nil
	e.OtherConfig, _ = OtherKeys(p.ConfigText) // Inspect parsed it already
	if r := p.Deployment.Spec.Replicas; r != nil {
		e.Replicas = *r
	}
	if g := p.Spec.TerminationGracePeriodSeconds; g != nil {
		e.TerminationGrace = *g
	}
	for _, c := range p.Apps {
		e.Apps = append(e.Apps, containerEssentials(p, c))
	}
	for _, s := range b.Services {
		for _, sp := range s.Spec.Ports {
			target := sp.TargetPort.String()
			if cp, _ := p.ResolvePort(sp.TargetPort); cp != nil {
				target = cp.Name
			}
			e.ServicePorts = append(e.ServicePorts, ServicePort{sp.Port, target})
		}
	}
	for _, c := range b.Claims {
		size := c.Spec.Resources.Requests[corev1.ResourceStorage]
		e.Claims = append(e.Claims, ClaimEssentials{c.Spec.AccessModes, size.String()})
	}
	return e
}

func containerEssentials(p *Pod, c *corev1.Container) ContainerEssentials {
	ce := ContainerEssentials{
		Image:     c.Image,
		Command:   c.Command,
		Args:      c.Args,
		Env:       c.Env,
		Ports:     c.Ports,
		Probes:    map[string]corev1.ProbeHandler{},
		Resources: c.Resources,
		Security:  c.SecurityContext,
	}
	if c.RestartPolicy != nil {
		ce.RestartPolicy = string(*c.RestartPolicy)
	}
	for kind, pr := range map[string]*corev1.Probe{
		"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe,
		"startup": c.StartupProbe,
	} {
		if pr != nil {
			ce.Probes[kind] = pr.ProbeHandler
		}
	}
	if c.Lifecycle != nil {
		ce.PreStop = c.Lifecycle.PreStop
	}
	for _, m := range c.VolumeMounts {
		ce.Mounts = append(ce.Mounts, Mount{m.MountPath, m.ReadOnly,
			volumeSource(p.Volume(m.Name))})
	}
	slices.SortFunc(ce.Mounts, func(a, b Mount) int {
		if a.Path < b.Path {
			return -1
		}
		if a.Path > b.Path {
			return 1
		}
		return 0
	})
	return ce
}

// volumeSource names what backs a volume.
func volumeSource(v *corev1.Volume) string {
	switch {
	case v == nil:
		return "missing"
	case v.ConfigMap != nil:
		return "configMap"
	case v.Secret != nil:
		return "secret"
	case v.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim"
	case v.EmptyDir != nil:
		return "emptyDir"
	}
	return "other"
}
