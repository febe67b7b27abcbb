# Backups of dedicated desktops' data disks: the backup rows, the pool schedule, the restoring state.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('broker', '0015_desktop_networks'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='pool',
            name='backup_every_hours',
            field=models.PositiveIntegerField(default=24, help_text="Dedicated pools with a data disk: back each desktop's data disk up this often (the worst-case data loss, RPO). 0: no scheduled backups."),
        ),
        migrations.AddField(
            model_name='pool',
            name='backup_keep',
            field=models.PositiveIntegerField(default=7, help_text='Backups kept per desktop; older ones are deleted after each new one.'),
        ),
        migrations.AlterField(
            model_name='desktop',
            name='state',
            field=models.CharField(choices=[('queued', 'Queued'), ('cloning', 'Cloning disk'), ('starting', 'Starting'), ('running', 'Ready'), ('stopping', 'Shutting down'), ('stopped', 'Powered off'), ('recomposing', 'Updating to a new image'), ('migrating', 'Moving to another host'), ('restoring', 'Restoring files from a backup'), ('failed', 'Failed'), ('deleting', 'Deleting'), ('deleted', 'Deleted')], default='queued', editable=False, max_length=16),
        ),
        migrations.CreateModel(
            name='DataDiskBackup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('storage_pool', models.CharField(editable=False, max_length=64)),
                ('volume_name', models.CharField(editable=False, max_length=160)),
                ('path', models.CharField(blank=True, editable=False, max_length=400)),
                ('size_bytes', models.BigIntegerField(blank=True, editable=False, help_text='What the copy takes on the backup storage.', null=True)),
                ('capacity_bytes', models.BigIntegerField(blank=True, editable=False, help_text="The disk's size as the guest sees it.", null=True)),
                ('state', models.CharField(choices=[('running', 'Running'), ('done', 'Done'), ('failed', 'Failed')], default='running', editable=False, max_length=16)),
                ('kind', models.CharField(choices=[('scheduled', 'Scheduled'), ('manual', 'Manual')], default='scheduled', editable=False, max_length=16)),
                ('taken_live', models.BooleanField(default=False, editable=False)),
                ('error', models.TextField(blank=True, editable=False)),
                ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('finished_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('desktop', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='backups', to='broker.desktop')),
                ('host', models.ForeignKey(help_text='The host whose libvirt wrote it (and whose backup pool holds it).', on_delete=django.db.models.deletion.PROTECT, related_name='backups', to='broker.host')),
                ('requested_by', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-created_at', '-id'],
                'indexes': [models.Index(fields=['desktop', 'state', 'created_at'], name='backup_desktop_state_idx')],
            },
        ),
    ]
