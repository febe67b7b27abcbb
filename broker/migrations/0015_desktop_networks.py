# Desktop networks: a pool's network per host, isolation and filtering, a stable MAC per desktop.

import broker.models.networks
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def give_each_desktop_a_mac(apps, schema_editor):
    Desktop = apps.get_model("broker", "Desktop")
    taken = set()
    for desktop in Desktop.objects.exclude(state="deleted").only("pk"):
        mac = broker.models.networks.new_mac_address()
        while mac in taken:
            mac = broker.models.networks.new_mac_address()
        taken.add(mac)
        Desktop.objects.filter(pk=desktop.pk).update(mac_address=mac)


def isolate_floating_pools(apps, schema_editor):
    Pool = apps.get_model("broker", "Pool")
    Pool.objects.filter(kind="floating").update(isolate_desktops=True)
    Pool.objects.exclude(kind="floating").update(isolate_desktops=False)


class Migration(migrations.Migration):

    dependencies = [
        ('broker', '0014_memory_balloon'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='PoolNetwork',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('network', 'libvirt network (NAT, routed, host-only: defined on the host)'), ('bridge', 'Linux bridge (a bridge of the host, e.g. br0 on the office LAN)'), ('openvswitch', 'Open vSwitch bridge (VLAN tag per pool)')], default='network', max_length=16)),
                ('name', models.CharField(help_text="The libvirt network's name (virsh net-list), or the bridge's interface name on the host.", max_length=64)),
                ('vlan_tag', models.PositiveSmallIntegerField(blank=True, help_text="Open vSwitch bridges only: the 802.1Q VLAN (1-4094) the desktops' ports are access ports of. On a Linux bridge, give the host a bridge on a VLAN sub-interface (br42 on eth0.42) and name that bridge instead.", null=True)),
                ('dhcp_server', models.GenericIPAddressField(blank=True, help_text="The DHCP server whose answers give a desktop its address in the traffic filter (spoofing protection). Empty: a libvirt network's own address (its dnsmasq); on a bridge, any DHCP server of the LAN is believed.", null=True, protocol='IPv4')),
            ],
            options={
                'ordering': ['pool', 'host__name'],
            },
        ),
        # Existing desktops: a MAC each (a callable default would give every row the same one).
        migrations.AddField(
            model_name='desktop',
            name='mac_address',
            field=models.CharField(default='', editable=False, max_length=17),
        ),
        migrations.RunPython(give_each_desktop_a_mac, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='desktop',
            name='mac_address',
            field=models.CharField(default=broker.models.networks.new_mac_address, editable=False, max_length=17),
        ),
        migrations.AddField(
            model_name='pool',
            name='filter_traffic',
            field=models.BooleanField(default=True, help_text="libvirt's clean-traffic filter on each desktop's port: it may send only from its own MAC and from the address DHCP gave it (no spoofing of another desktop), and only IPv4 and ARP."),
        ),
        migrations.AddField(
            model_name='pool',
            name='isolate_desktops',
            field=models.BooleanField(blank=True, choices=[(None, "By the pool's kind (floating: yes; dedicated: no)"), (True, 'Yes'), (False, 'No')], default=None, help_text='Desktops of this pool cannot reach each other (libvirt isolated ports on the bridge); they still reach the gateway and the rest of the network.', null=True),
        ),
        migrations.RunPython(isolate_floating_pools, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='desktop',
            constraint=models.UniqueConstraint(condition=models.Q(models.Q(('state', 'deleted'), _negated=True), models.Q(('mac_address', ''), _negated=True)), fields=('mac_address',), name='one_live_desktop_per_mac_address'),
        ),
        migrations.AddField(
            model_name='poolnetwork',
            name='host',
            field=models.ForeignKey(blank=True, help_text='Empty: every host of the pool that has no row of its own.', limit_choices_to={'kind': 'hypervisor'}, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='pool_networks', to='broker.host'),
        ),
        migrations.AddField(
            model_name='poolnetwork',
            name='pool',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='networks', to='broker.pool'),
        ),
        migrations.AddConstraint(
            model_name='poolnetwork',
            constraint=models.UniqueConstraint(fields=('pool', 'host'), name='one_network_per_pool_and_host'),
        ),
        migrations.AddConstraint(
            model_name='poolnetwork',
            constraint=models.UniqueConstraint(condition=models.Q(('host__isnull', True)), fields=('pool',), name='one_default_network_per_pool'),
        ),
    ]
